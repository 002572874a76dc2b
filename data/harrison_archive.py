"""HARRISON's image archive, HARRISON_full.tar: checked, extracted and fixed before preprocessing.

The dataset is published as one tar (6,067,998,720 bytes, only by BitTorrent: `INFO_HASH`), the
three lists in the dataset's repository, and HARRISON_fixed.zip, which replaces two images that
are corrupt in the tar. colab.ipynb puts them together with these functions:

- `check_archive`: refuses a file of another size (a download cut short, a wrong file) in one
  line that names the size it has, and an unfinished aria2c download (its `.aria2` control file
  is beside it: aria2c may have given the file its full size before every piece arrived);
- `extract`: safe (tarfile's "data" filter: nothing lands outside the destination, no special
  files), resumable (files already extracted whole are kept, so an interrupted run goes on
  where it stopped) and idempotent (a finished extraction of the same archive is not redone);
- `missing_lists`, `fetch_once`: the lists the archive lacks, fetched once, atomically;
- `apply_fixed`: writes the replacement images of HARRISON_fixed.zip into the dataset;
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
from data import atomic, harrison

ARCHIVE_NAME = "HARRISON_full.tar"
ARCHIVE_BYTES = 6_067_998_720
INFO_HASH = "62457023e0de1009d7bf49541d4cf09c68f66339"  # v1: SHA-1 of the torrent's info dict
FIXED_ZIP = "HARRISON_fixed.zip"
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
        with tarfile.open(archive, "r:*") as tar, tqdm(
                total=os.path.getsize(archive), unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"extracting {os.path.basename(archive)}", disable=not progress) as bar:
            for member in tar:
                try:
                    member = tarfile.data_filter(member, destination)
                except tarfile.FilterError as error:
                    raise ArchiveError(f"{archive}: refusing a member: {error}") from None
                if _is_complete(member, os.path.join(destination, member.name)):
                    kept += 1
                else:
                    tar.extract(member, destination, filter="data")
                    extracted += member.isfile()
                bar.update(tar.offset - bar.n)
            bar.update(bar.total - bar.n)  # the end-of-archive blocks
    except (tarfile.ReadError, EOFError) as error:
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
    """Writes the images of HARRISON_fixed.zip (paths relative to the dataset root, e.g.
    instagram_dataset/sun/image_99.jpg) over the ones in `root`, each atomically; returns their
    relative paths. Running it again rewrites the same bytes."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            written = []
            for info in archive.infolist():
                if info.is_dir():
                    continue
                relative = harrison.relative_path_key(info.filename)
                if relative is None:
                    raise ArchiveError(f"{zip_path}: refusing {info.filename!r}, a path outside "
                                       "the dataset")
                with atomic.atomic_path(os.path.join(root, relative)) as temporary:
                    with open(temporary, "wb") as stream:
                        stream.write(archive.read(info))
                written.append(relative)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as error:
        raise ArchiveError(f"cannot apply {zip_path}: {cli.first_line(error)}") from None
    return written


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
