"""Atomic writes of files and folders, the one way every script writes its outputs.

A file (or folder) is written under a temporary name beside its real one, and moved onto the
real name only once complete: an interrupted run never leaves half an output under the real
name, and a rerun replaces it whole. Temporary names are `.tmp-<name>-<pid>-...`, so a later
run removes what a killed one left behind (`remove_leftovers`) without touching a live run's.
`exclusive` keeps a second run off an output while one writes it.
"""
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import tempfile

_RENAME_EXCHANGE = 2  # renameat2 flag (Linux 3.15+): swap two paths in one step


def _temporary_prefix(path):
    return f".tmp-{os.path.basename(os.path.abspath(path))}-"


def remove_leftovers(path):
    """Removes the temporaries of `path` that runs which are no longer alive left beside it."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            leftover = os.path.join(directory, name)
            if os.path.isdir(leftover) and not os.path.islink(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(leftover)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; moves it onto `path` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # keeps savefig / PIL format detection working
    handle, temporary = tempfile.mkstemp(prefix=f"{_temporary_prefix(path)}{os.getpid()}-",
                                         suffix=suffix, dir=directory)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path, text):
    """Writes `text` (UTF-8, line endings as given) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)


def _exchange(first, second):
    """Swaps two existing paths in one step; False where the OS cannot (then nothing moved)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd = -100
    result = renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second),
                       _RENAME_EXCHANGE)
    return result == 0


@contextlib.contextmanager
def atomic_dir(path):
    """Yields a new empty folder beside `path`; if the block succeeds, the folder replaces
    `path` whole. Where the OS can swap two folders in one step (Linux), a kill at any moment
    leaves the old or the new folder at `path`, never neither."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    remove_leftovers(path)
    staging = tempfile.mkdtemp(prefix=f"{_temporary_prefix(path)}{os.getpid()}-", dir=parent)
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        if not os.path.exists(path):
            os.replace(staging, path)
        elif not _exchange(staging, path):
            aside = staging + "-old"
            os.replace(path, aside)
            os.replace(staging, path)
            staging = aside
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The descriptors of the locks this process holds (`exclusive`). A forked child (a pool worker of
# preprocess.py) gets copies of them, which would keep a lock held after its holder is killed, until
# the child exits too: a rerun started at once would be refused. The child points them at
# /dev/null (the numbers stay valid for the file objects that own them).
_held_locks = set()


def _drop_inherited_locks():
    if _held_locks:
        null = os.open(os.devnull, os.O_RDONLY)
        for descriptor in _held_locks:
            os.dup2(null, descriptor)
        os.close(null)
        _held_locks.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def exclusive(path, busy):
    """Holds an exclusive lock on the file `path` (created if need be) for the block. While one
    process holds it, another that asks gets the exception `busy(holder)` at once (holder: "pid
    N", or "another process"). The OS releases the lock when its process dies, so a killed run
    never leaves it stuck. Yields True, or False on a file system without locks (some network
    mounts), where the caller should warn that nothing keeps a second run out. The file stays
    (removing it would let two runs lock two different files), emptied when the block ends.
    A process forked in the block does not hold the lock (`_drop_inherited_locks`)."""
    with open(path, "a+", encoding="utf-8") as stream:
        locked = True
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            raise busy(stream.read().strip() or "another process") from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            locked = False
        stream.seek(0)
        stream.truncate()
        stream.write(f"pid {os.getpid()}\n")
        stream.flush()
        _held_locks.add(stream.fileno())
        try:
            yield locked
        finally:
            _held_locks.discard(stream.fileno())
            stream.truncate(0)


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask
