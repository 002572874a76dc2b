"""The HARRISON archive before preprocessing (data/harrison_archive.py), on local files only: the
size check, safe, resumable and idempotent extraction, the replacement images, the lists fetched
once (file:// URLs), the torrent's info hash. The real HARRISON_fixed.zip and torrent are used
when ../shared/harrison has them."""
import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from data import harrison_archive as archive_lib

REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "harrison")
IMAGES = {"instagram_dataset/sea/image_1.jpg": b"\xff\xd8sea" * 300,
          "instagram_dataset/sea/image_2.jpg": b"\xff\xd8wave" * 200,
          "instagram_dataset/sun/image_99.jpg": b"\xff\xd8cut",  # "corrupt" in the archive
          "instagram_dataset/love/image_7.jpg": b"\xff\xd8love" * 500}
LISTS = {"data_list.txt": "".join(f"{path}\n" for path in IMAGES),
         "tag_list.txt": "sea \nsea wave \nsun \nlove \n",
         "vocab_index.txt": "sea 0\nwave 1\nsun 2\nlove 3\n"}


def write_tar(path, files, top="", mode="w"):
    """A tar of {relative path: bytes}, under the folder `top` when given."""
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(os.path.join(top, name) if top else name)
            info.size, info.mtime = len(data), 1463406695
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def files_under(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = open(path, "rb").read()
    return found


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_the_archive_must_have_the_published_size(tmp_path):
    path = tmp_path / "HARRISON_full.tar"
    with open(path, "wb") as stream:
        stream.truncate(archive_lib.ARCHIVE_BYTES)  # sparse: no disk used
    assert archive_lib.check_archive(str(path)) == 6_067_998_720
    with open(path, "r+b") as stream:
        stream.truncate(1_234_567_890)  # a download cut short
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.check_archive(str(path))
    assert one_line(error) == (f"{path} has 1,234,567,890 bytes, not the 6,067,998,720 of "
                               "HARRISON_full.tar: a download cut short, or another file")
    # Another size is fine when asked for (another archive in HARRISON's format), or any (None).
    assert archive_lib.check_archive(str(path), 1_234_567_890) == 1_234_567_890
    assert archive_lib.check_archive(str(path), None) == 1_234_567_890
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.check_archive(str(tmp_path / "elsewhere.tar"))
    assert one_line(error) == f"no archive at {tmp_path / 'elsewhere.tar'}"


def test_an_unfinished_aria2c_download_is_refused_even_at_full_size(tmp_path):
    path = tmp_path / "HARRISON_full.tar"
    with open(path, "wb") as stream:
        stream.truncate(archive_lib.ARCHIVE_BYTES)  # aria2c may allocate the whole file first
    (tmp_path / "HARRISON_full.tar.aria2").write_bytes(b"control")
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.check_archive(str(path))
    assert "unfinished download (HARRISON_full.tar.aria2 is beside it)" in one_line(error)


def test_extraction_finds_the_root_and_is_idempotent(tmp_path):
    files = dict(IMAGES, **{name: text.encode() for name, text in LISTS.items()})
    tar = write_tar(tmp_path / "HARRISON_full.tar", files, top="HARRISON")
    destination = str(tmp_path / "extracted")
    result = archive_lib.extract(tar, destination, progress=False)
    root = os.path.join(destination, "HARRISON")
    assert result == {"root": root, "extracted": len(files), "kept": 0, "already": False}
    assert files_under(root) == files
    assert archive_lib.missing_lists(root) == []
    # Again: the same archive was extracted there whole, nothing is read or written.
    os.remove(os.path.join(root, "instagram_dataset/sea/image_1.jpg"))
    assert archive_lib.extract(tar, destination, progress=False) == {
        "root": root, "extracted": 0, "kept": 0, "already": True}
    assert not os.path.exists(os.path.join(root, "instagram_dataset/sea/image_1.jpg"))


def test_an_interrupted_extraction_goes_on_where_it_stopped(tmp_path):
    """What an interruption leaves: whole files, one cut short, the rest not yet there, no
    record of a finished extraction. The rerun keeps the whole ones and writes the others."""
    tar = write_tar(tmp_path / "HARRISON_full.tar", IMAGES)
    destination = tmp_path / "extracted"
    archive_lib.extract(tar, str(destination), progress=False)
    os.remove(destination / archive_lib.DONE_FILE)
    cut = destination / "instagram_dataset/sea/image_2.jpg"
    cut.write_bytes(IMAGES["instagram_dataset/sea/image_2.jpg"][:100])
    os.remove(destination / "instagram_dataset/love/image_7.jpg")
    result = archive_lib.extract(tar, str(destination), progress=False)
    assert (result["extracted"], result["kept"], result["already"]) == (2, 2, False)
    assert files_under(destination) == dict(IMAGES, **{archive_lib.DONE_FILE: (
        destination / archive_lib.DONE_FILE).read_bytes()})


def test_another_archive_in_the_same_place_is_extracted_again(tmp_path):
    destination = str(tmp_path / "extracted")
    first = write_tar(tmp_path / "first.tar", IMAGES)
    archive_lib.extract(first, destination, progress=False)
    changed = dict(IMAGES, **{"instagram_dataset/sea/image_1.jpg": b"\xff\xd8new"})
    second = write_tar(tmp_path / "second.tar.gz", changed, mode="w:gz")
    result = archive_lib.extract(second, destination, progress=False)
    assert result["extracted"] == 1 and result["kept"] == len(IMAGES) - 1
    assert files_under(os.path.join(destination, "instagram_dataset")) == {
        os.path.relpath(name, "instagram_dataset"): data for name, data in changed.items()}


@pytest.mark.parametrize("member", ["../escape.jpg", "instagram_dataset/../../escape.jpg",
                                    "link", "fifo"])
def test_members_that_could_escape_are_refused_before_they_are_written(tmp_path, member):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo("instagram_dataset/sea/image_1.jpg")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"abc"))
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif member == "fifo":
            info.type = tarfile.FIFOTYPE
        else:
            info.size = 3
        tar.addfile(info, io.BytesIO(b"bad") if info.isfile() else None)
    destination = tmp_path / "inside" / "extracted"
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.extract(str(path), str(destination), progress=False)
    assert one_line(error).startswith(f"{path}: refusing a member: ")
    assert sorted(os.listdir(tmp_path)) == ["evil.tar", "inside"]
    assert os.listdir(destination) == []  # checked before anything is written: not even the good one


def test_an_absolute_path_lands_inside_the_destination(tmp_path):
    outside = tmp_path / "absolute.jpg"
    tar = write_tar(tmp_path / "HARRISON_full.tar", dict(IMAGES, **{str(outside): b"x"}))
    destination = tmp_path / "extracted"
    archive_lib.extract(tar, str(destination), progress=False)
    assert not outside.exists()
    assert (destination / str(outside).lstrip("/")).read_bytes() == b"x"


def test_a_truncated_or_foreign_archive_is_a_one_line_error(tmp_path):
    tar = tmp_path / "HARRISON_full.tar"
    write_tar(tar, IMAGES)
    data = tar.read_bytes()
    tar.write_bytes(data[:1536])  # cut in the middle of the second member
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.extract(str(tar), str(tmp_path / "a"), progress=False)
    assert "is not a tar archive or is truncated" in one_line(error)
    page = tmp_path / "page.tar"
    page.write_bytes(b"<!DOCTYPE html><html>Not Found</html>")
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.extract(str(page), str(tmp_path / "b"), progress=False)
    assert one_line(error).startswith(f"{page} is not a tar archive")
    other = write_tar(tmp_path / "other.tar", {"photos/a.jpg": b"x"})
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.extract(other, str(tmp_path / "c"), progress=False)
    assert one_line(error) == (f"no instagram_dataset/ folder in {other}: is it "
                               "HARRISON_full.tar?")


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return str(path)


def test_the_replacement_images_are_written_over_the_corrupt_ones(tmp_path):
    tar = write_tar(tmp_path / "HARRISON_full.tar", IMAGES)
    root = archive_lib.extract(tar, str(tmp_path / "extracted"), progress=False)["root"]
    fixed = {"instagram_dataset/sun/image_99.jpg": b"\xff\xd8whole image" * 50}
    zip_path = write_zip(tmp_path / "HARRISON_fixed.zip",
                         dict(fixed, **{"instagram_dataset/": b""}))
    for _ in range(2):  # idempotent
        assert archive_lib.apply_fixed(zip_path, root) == list(fixed)
        assert files_under(os.path.join(root, "instagram_dataset")) == {
            os.path.relpath(name, "instagram_dataset"): data
            for name, data in dict(IMAGES, **fixed).items()}
    evil = write_zip(tmp_path / "evil.zip", {"../outside.jpg": b"x"})
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.apply_fixed(evil, root)
    assert one_line(error) == f"{evil}: refusing '../outside.jpg', a path outside the dataset"
    assert not os.path.exists(tmp_path / "outside.jpg")
    page = tmp_path / "page.zip"
    page.write_bytes(b"<html>moved</html>")
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.apply_fixed(str(page), root)
    assert one_line(error) == f"cannot apply {page}: File is not a zip file"


@pytest.mark.skipif(not os.path.isfile(os.path.join(REAL, "HARRISON_fixed.zip")),
                    reason="the real HARRISON_fixed.zip is not available")
def test_the_real_fixed_zip_replaces_the_two_known_corrupt_entries(tmp_path):
    written = archive_lib.apply_fixed(os.path.join(REAL, "HARRISON_fixed.zip"), str(tmp_path))
    assert sorted(written) == ["instagram_dataset/family/image_2411.jpg",
                               "instagram_dataset/sun/image_99.jpg"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:2] == b"\xff\xd8"  # JPEGs


def test_missing_lists_are_fetched_once_and_whole(tmp_path):
    source = tmp_path / "repository" / "HARRISON"
    source.mkdir(parents=True)
    for name, text in LISTS.items():
        (source / name).write_text(text)
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "data_list.txt").write_text(LISTS["data_list.txt"])
    missing = archive_lib.missing_lists(str(root))
    assert missing == ["tag_list.txt", "vocab_index.txt"]
    for name in missing:
        target = str(root / name)
        assert archive_lib.fetch_once(f"{source.as_uri()}/{name}", target) == target
    assert {name: (root / name).read_text() for name in LISTS} == LISTS
    os.remove(source / "vocab_index.txt")  # fetched once: the source is not read again
    assert archive_lib.fetch_once(f"{source.as_uri()}/vocab_index.txt",
                                  str(root / "vocab_index.txt")) == str(root / "vocab_index.txt")
    # The lists' old URL is gone (the repository moved them into HARRISON/): one line, no file.
    gone = f"{source.parent.as_uri()}/vocab_index.txt"
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.fetch_once(gone, str(tmp_path / "vocab_index.txt"))
    assert one_line(error).startswith(f"cannot download {gone}: ")
    assert sorted(os.listdir(tmp_path)) == ["dataset", "repository"]  # no partial file


def bencode(value):
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(map(bencode, value)) + b"e"
    return b"d" + b"".join(bencode(key) + bencode(value[key]) for key in sorted(value)) + b"e"


def test_the_torrent_is_checked_by_its_info_hash(tmp_path):
    info = {b"length": archive_lib.ARCHIVE_BYTES, b"name": b"HARRISON_full.tar",
            b"piece length": 8_388_608, b"pieces": b"\x01" * 40}
    torrent = tmp_path / "HARRISON_dataset.torrent"
    torrent.write_bytes(bencode({b"announce": b"udp://tracker.opentrackr.org:1337/announce",
                                 b"announce-list": [[b"udp://a"], [b"udp://b"]],
                                 b"creation date": 1463406695, b"info": info}))
    expected = hashlib.sha1(bencode(info)).hexdigest()
    assert archive_lib.check_torrent(str(torrent), expected) == str(torrent)
    with pytest.raises(archive_lib.ArchiveError) as error:
        archive_lib.check_torrent(str(torrent))
    assert one_line(error) == (f"{torrent} is another torrent (info hash {expected}, not "
                               f"{archive_lib.INFO_HASH})")
    page = tmp_path / "page.torrent"
    page.write_bytes(b"<!DOCTYPE html>")
    for data in (b"<!DOCTYPE html>", bencode({b"info": info})[:-20], b"d4:infoi1e"):
        page.write_bytes(data)
        with pytest.raises(archive_lib.ArchiveError) as error:
            archive_lib.check_torrent(str(page))
        assert one_line(error).startswith(f"{page} is not a .torrent file")


@pytest.mark.skipif(not os.path.isfile(os.path.join(REAL, "HARRISON_dataset.torrent")),
                    reason="the real torrent is not available")
def test_the_real_torrent_has_the_published_info_hash():
    path = os.path.join(REAL, "HARRISON_dataset.torrent")
    assert archive_lib.check_torrent(path) == path
