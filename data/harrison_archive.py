"""HARRISON's image archive, HARRISON_full.tar: checked, extracted and fixed before preprocessing.

The dataset is published as one tar (6,067,998,720 bytes, only by BitTorrent: `INFO_HASH`), the
three lists in the dataset's repository, and HARRISON_fixed.zip, which replaces two images that
are corrupt in the tar. colab.ipynb puts them together with these functions:

- `check_archive`: refuses a file of another size (a download cut short, a wrong file) in one
  line that names the size it has, and an unfinished aria2c download (its `.aria2` control file
  is beside it: aria2c may have given the file its full size before every piece arrived);
- `extract`: safe (every member checked before any is written: no links, no special files,
  nothing outside the destination, no more files or bytes than HARRISON has, data/safe_archive.py;
  then tarfile's "data" filter), resumable (files already extracted whole are kept, so an
  interrupted run goes on where it stopped) and idempotent (a finished extraction of the same archive is not redone);
- `missing_lists`, `fetch_once`: the lists the archive lacks, fetched once, atomically;
- `apply_fixed`: writes the two replacement images of HARRISON_fixed.zip into the dataset, and
  nothing else;
- `check_torrent`: the .torrent fetched is the dataset's (its info hash), before a client runs.

Pure Python (no TensorFlow), like data/harrison.py.
"""
import glob
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

import cli
from data import atomic, harrison, safe_archive

ARCHIVE_NAME = "HARRISON_full.tar"
ARCHIVE_BYTES = 6_067_998_720
INFO_HASH = "62457023e0de1009d7bf49541d4cf09c68f66339"  # v1: SHA-1 of the torrent's info dict
FIXED_ZIP = "HARRISON_fixed.zip"
# The only images HARRISON_fixed.zip replaces (1,183 and 114,304 bytes), and a bound on their size.
FIXED_IMAGES = ("instagram_dataset/family/image_2411.jpg", "instagram_dataset/sun/image_99.jpg")
MAX_FIXED_BYTES = 16 * 2**20
# More than the archive's 57,383 images and 50 folders; each member costs memory while checked.
MAX_MEMBERS = 200_000
IMAGES_FOLDER = "instagram_dataset"
LISTS = (harrison.DATA_LIST, harrison.TAG_LIST, harrison.VOCAB_INDEX)
DONE_FILE = ".extracted.json"  # in the destination: which archive was extracted there whole
ARIA2_SUFFIX = ".aria2"  # aria2c's control file of an unfinished download


class ArchiveError(cli.UserError):
    """An archive, list or torrent that cannot be used."""


def check_archive(path, expected_bytes=ARCHIVE_BYTES):
    """The size of the archive at `path` once it is whole: ArchiveError when it is missing, has
    another size than `expected_bytes` (None: any size), or is an unfinished aria2c download."""
    if not os.path.isfile(path):
        raise ArchiveError(f"no archive at {path}")
    if os.path.exists(path + ARIA2_SUFFIX):
        raise ArchiveError(f"{path} is an unfinished download ({os.path.basename(path)}"
                           f"{ARIA2_SUFFIX} is beside it): run the download again to finish it")
    size = os.path.getsize(path)
    if expected_bytes is not None and size != expected_bytes:
        raise ArchiveError(f"{path} has {size:,} bytes, not the {expected_bytes:,} of "
                           f"{ARCHIVE_NAME}: a download cut short, or another file")
    return size


def _is_complete(member, target):
    """Whether `target` is what extracting `member` writes: tarfile sets a file's mtime after
    writing all of it, so a file cut short by an interruption never matches."""
    try:
        stat = os.lstat(target)
    except OSError:
        return False
    return (member.isfile() and os.path.isfile(target) and stat.st_size == member.size
            and int(stat.st_mtime) == int(member.mtime))


def _done_record(archive):
    stat = os.stat(archive)
    return {"archive": os.path.basename(archive), "size": stat.st_size,
            "mtime": int(stat.st_mtime)}


def _read_done(destination):
    try:
        with open(os.path.join(destination, DONE_FILE), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def extract(archive, destination, progress=True):
    """Extracts the tar `archive` into `destination` and returns the dataset's root (`find_root`).

    Every member is checked before any is written (data/safe_archive.py: no links, no special
    files, nothing outside `destination`, at most MAX_MEMBERS members declaring at most
    ARCHIVE_BYTES), then each is extracted with tarfile's "data" filter.
    Returns dict: root, extracted (files written), kept (files found whole from an earlier,
    interrupted run), already (True when this archive had been extracted there whole)."""
    if not hasattr(tarfile, "data_filter"):
        raise ArchiveError("safe extraction needs tarfile's data filter (Python 3.11.4+, 3.12)")
    os.makedirs(destination, exist_ok=True)
    if _read_done(destination) == _done_record(archive):
        return {"root": find_root(destination, archive), "extracted": 0, "kept": 0,
                "already": True}
    extracted = kept = 0
    try:
        with safe_archive.open_tar(archive) as tar:
            members = safe_archive.scan(tar, MAX_MEMBERS, ARCHIVE_BYTES,
                                        lambda member: tarfile.data_filter(member, destination))
            with tqdm(total=sum(member.size for member in members), unit="B", unit_scale=True,
                      unit_divisor=1024, desc=f"extracting {os.path.basename(archive)}",
                      disable=not progress) as bar:
                for member in members:
                    if _is_complete(member, os.path.join(destination, member.name)):
                        kept += 1
                    else:
                        tar.extract(member, destination, filter="data")
                        extracted += member.isfile()
                    bar.update(member.size)
    except safe_archive.NotATar as error:
        raise ArchiveError(f"{archive} {error}") from None
    except (tarfile.FilterError, safe_archive.ArchiveRefused) as error:
        raise ArchiveError(f"{archive}: refusing a member: {error}") from None
    except safe_archive.CORRUPT as error:
        raise ArchiveError(f"{archive} is not a tar archive or is truncated "
                           f"({cli.first_line(error)})") from None
    except (tarfile.TarError, OSError) as error:
        raise ArchiveError(f"cannot extract {archive}: {cli.first_line(error)}") from None
    root = find_root(destination, archive)
    atomic.write_text(os.path.join(destination, DONE_FILE), json.dumps(_done_record(archive)))
    return {"root": root, "extracted": extracted, "kept": kept, "already": False}


def find_root(destination, archive=None):
    """The folder under `destination` (itself, or one or two levels down) that holds
    instagram_dataset/: the dataset root preprocess.py takes as --dataset_dir."""
    found = [os.path.dirname(path) for depth in range(3)
             for path in glob.glob(os.path.join(glob.escape(destination), *["*"] * depth,
                                                IMAGES_FOLDER))
             if os.path.isdir(path)]
    source = archive or destination
    if not found:
        raise ArchiveError(f"no {IMAGES_FOLDER}/ folder in {source}: is it {ARCHIVE_NAME}?")
    if len(found) > 1:
        raise ArchiveError(f"{len(found)} {IMAGES_FOLDER}/ folders in {source} "
                           f"({', '.join(sorted(found)[:2])}...): extract one dataset per folder")
    return found[0]


def missing_lists(root):
    """The names of the lists (data_list.txt, tag_list.txt, vocab_index.txt) not in `root`."""
    return [name for name in LISTS if not os.path.isfile(os.path.join(root, name))]


def fetch_once(url, path, timeout=60):
    """`path`, downloaded from `url` first unless it is there already. The file is written whole
    or not at all, so a download cut short never passes for the file in a later session. Any URL
    urllib opens (https, file)."""
    if os.path.isfile(path):
        return path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                atomic.atomic_path(path) as temporary:
            with open(temporary, "wb") as stream:
                shutil.copyfileobj(response, stream, 1 << 20)
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and os.path.getsize(temporary) != int(announced):
                raise ArchiveError(f"download of {url} stopped after "
                                   f"{os.path.getsize(temporary):,} of {int(announced):,} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise ArchiveError(f"cannot download {url}: {reason}") from None
    return path


def apply_fixed(zip_path, root):
    """Writes the images of HARRISON_fixed.zip over the two it replaces in `root`
    (FIXED_IMAGES, paths relative to the dataset root), each atomically, read in chunks;
    returns their relative paths. Any other member (a list, another image), or one larger than
    MAX_FIXED_BYTES, is refused before anything is written. Running it again rewrites the same
    bytes."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [(info, _fixed_image(zip_path, info)) for info in archive.infolist()
                       if not info.is_dir()]
            for info, relative in members:
                with archive.open(info) as source, \
                        atomic.atomic_path(os.path.join(root, relative)) as temporary:
                    with open(temporary, "wb") as stream:
                        shutil.copyfileobj(source, stream, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as error:
        raise ArchiveError(f"cannot apply {zip_path}: {cli.first_line(error)}") from None
    return [relative for _, relative in members]


def _fixed_image(zip_path, info):
    """The relative path of a member of HARRISON_fixed.zip, once it is known to be one of the
    images it replaces, of a size a photo has."""
    relative = harrison.relative_path_key(info.filename)
    if relative is None:
        raise ArchiveError(f"{zip_path}: refusing {info.filename!r}, a path outside the dataset")
    if relative not in FIXED_IMAGES:
        raise ArchiveError(f"{zip_path}: refusing {info.filename!r}: {FIXED_ZIP} replaces "
                           f"only {' and '.join(FIXED_IMAGES)}")
    if info.file_size > MAX_FIXED_BYTES:
        raise ArchiveError(f"{zip_path}: refusing {info.filename!r}: {info.file_size:,} bytes, "
                           f"more than the {MAX_FIXED_BYTES:,} a replacement image may have")
    return relative


def _bencoded_end(data, start):
    """The index just past the bencoded value that starts at `start` in `data`."""
    kind = data[start:start + 1]
    if kind == b"i":
        return data.index(b"e", start) + 1
    if kind in (b"l", b"d"):
        position = start + 1
        while data[position:position + 1] != b"e":
            if position >= len(data):
                raise ValueError("unterminated list or dictionary")
            position = _bencoded_end(data, position)
        return position + 1
    colon = data.index(b":", start)
    end = colon + 1 + int(data[start:colon])
    if end > len(data):
        raise ValueError("string runs past the end")
    return end


def torrent_info_hash(data):
    """The v1 info hash of a .torrent file's bytes: SHA-1 of its bencoded info dictionary."""
    if data[:1] != b"d":
        raise ValueError("not a bencoded dictionary")
    position = 1
    while data[position:position + 1] != b"e":
        key_end = _bencoded_end(data, position)
        value_end = _bencoded_end(data, key_end)
        if data[data.index(b":", position) + 1:key_end] == b"info":
            if data[key_end:key_end + 1] != b"d":
                raise ValueError("its info is not a dictionary")
            return hashlib.sha1(data[key_end:value_end]).hexdigest()
        position = value_end
    raise ValueError("no info dictionary")


def check_torrent(path, info_hash=INFO_HASH):
    """ArchiveError unless the .torrent at `path` is the one with `info_hash`."""
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        found = torrent_info_hash(data)
    except (ValueError, IndexError) as error:
        raise ArchiveError(f"{path} is not a .torrent file ({error})") from None
    if found != info_hash:
        raise ArchiveError(f"{path} is another torrent (info hash {found}, not {info_hash})")
    return path
