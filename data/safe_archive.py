"""Tar archives from someone else, read as data: every member checked before anything is written.

A model archive (predict.py, export.py), the warm-start checkpoint downloaded from a URL and
HARRISON's image archive all come from strangers. Reading one may not
- write outside the folder it is extracted into: absolute paths, `..`, links (symbolic or hard:
  the CVE-2025-4517 family of tarfile filter bypasses needs one) and special files (devices,
  FIFOs) are refused (`check_member`), whatever tarfile's own filters let through;
- take more disk than a cap: the members' declared sizes are added up while the headers are
  read (`scan`), and the archive is refused at the header that passes the cap, before any byte
  of it is written (a 2 MB gzip can declare terabytes of zeros);
- take more memory than a header needs: tarfile reads a pax header or a GNU long name in one
  piece, so a 2 MB gzip could make it hold gigabytes; one read past MAX_READ is refused.

Pure Python (no TensorFlow), like data/harrison_archive.py, which uses it.
"""
import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import tarfile
import zlib

import cli

MAX_READ = 1 << 20  # the largest single read: tarfile's data reads are 16 KiB, headers 512 bytes
CHUNK = 1 << 20
_DECOMPRESSORS = ((b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
                  (b"BZh", lambda raw: bz2.BZ2File(raw, "rb")),
                  (b"\xfd7zXZ\x00", lambda raw: lzma.LZMAFile(raw, "rb")))
# What a truncated or damaged archive raises while it is read.
CORRUPT = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


class ArchiveRefused(cli.UserError):
    """An archive member (or header) that could write outside its folder or take unbounded
    memory or disk; the message is one line, without the archive's name."""


class _BoundedReads:
    """A binary file whose reads are at most MAX_READ bytes: what tarfile reads through."""

    def __init__(self, stream):
        self.stream = stream

    def read(self, size=-1):
        if size is None or size < 0 or size > MAX_READ:
            shown = "all" if size is None or size < 0 else f"{size:,}"
            raise ArchiveRefused(f"a header of {shown} bytes (a pax header or a long name, "
                                 f"at most {MAX_READ:,}); refusing it")
        return self.stream.read(size)

    def seek(self, offset, whence=os.SEEK_SET):
        return self.stream.seek(offset, whence)

    def tell(self):
        return self.stream.tell()


class NotATar(Exception):
    """A file that is not a tar archive; the message says what it looks like, e.g. "is not a tar
    archive (starts with '<!DOCTYPE html')" (an HTML page served in place of the archive)."""


def _what_it_holds(head):
    if not head:
        return "it is empty"
    if head.startswith(b"\x1f\x8b"):
        return "gzip data without a tar archive inside"
    first_line = head.lstrip().split(b"\n", 1)[0][:20] or head[:20]
    return f"starts with {first_line.decode('latin-1')!r}"


@contextlib.contextmanager
def open_tar(archive):
    """A TarFile reading `archive` (a path or an open binary file; plain, gzip, bzip2 or xz)
    with bounded reads. NotATar when it is not a tar archive."""
    with contextlib.ExitStack() as stack:
        raw = archive
        if isinstance(archive, (str, os.PathLike)):
            raw = stack.enter_context(open(archive, "rb"))
        head = raw.read(64)
        raw.seek(0)
        stream = raw
        for magic, kind in _DECOMPRESSORS:
            if head.startswith(magic):
                stream = stack.enter_context(kind(raw))
        try:
            tar = tarfile.open(fileobj=_BoundedReads(stream), mode="r:")
        except tarfile.ReadError:
            raise NotATar(f"is not a tar archive ({_what_it_holds(head)})") from None
        yield stack.enter_context(tar)


def check_member(member):
    """ArchiveRefused for a member that could write outside the extraction folder."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or "\0" in name:
        raise ArchiveRefused(f"unsafe path in archive: {name!r}")
    if member.issym() or member.islnk():
        raise ArchiveRefused(f"archive holds a link ({name!r} -> {member.linkname!r}); "
                             "refusing it")
    if not (member.isfile() or member.isdir()) or member.issparse():
        raise ArchiveRefused(f"archive holds a special file {name!r}; refusing it")


def checked_members(tar, max_members, max_bytes, prepare=None):
    """Yields the members of `tar` as their headers are read, each checked (`check_member`,
    after `prepare(member)` when given, which returns the member to keep) and counted:
    ArchiveRefused past `max_members` members or `max_bytes` declared bytes, at the header
    that passes it (the data beyond is never read)."""
    count, total = 0, 0
    for member in tar:
        member = prepare(member) if prepare else member
        check_member(member)
        count += 1
        total += member.size if member.isfile() else 0
        if count > max_members:
            raise ArchiveRefused(f"it holds more than {max_members:,} files and folders, the "
                                 "most this archive may have")
        if total > max_bytes:
            raise ArchiveRefused(f"its files declare more than {_megabytes(max_bytes)}, the most "
                                 f"this archive may hold ({member.name!r} passes it)")
        yield member


def scan(tar, max_members, max_bytes, prepare=None):
    """Every member of `tar`, checked and counted (`checked_members`) before any is
    extracted."""
    return list(checked_members(tar, max_members, max_bytes, prepare))


def copy_member(tar, member, path):
    """Writes the file `member` of `tar` to `path` in CHUNK reads; its bytes, as declared."""
    with tar.extractfile(member) as source, open(path, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK)
    if os.path.getsize(path) != member.size:
        raise tarfile.ReadError(f"{member.name} is cut short")
    return member.size


def _megabytes(size):
    return f"{size / 2**20:,.0f} MB"
