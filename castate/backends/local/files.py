"""File-system primitives with the durability rules castate relies on.

Whole files are written atomically: temp file in the same directory, write, fsync,
rename, fsync the directory. Created files and directories are private to the owner
(0600 / 0700), since workflow state often holds secrets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from castate.backends.local import crashpoints, osio
from castate.errors import CorruptFileError

FILE_MODE = 0o600
DIR_MODE = 0o700


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Put ``path`` into an OSError raised inside that names no file (calls on a descriptor don't)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path`` if it is a regular file: a symlink, FIFO, device or
    directory put in the store by someone else raises CorruptFileError instead of being
    followed, read forever (a FIFO) or read without end (``/dev/zero``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO or socket without a writer
            raise CorruptFileError(str(path), "not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CorruptFileError(str(path), "not a regular file")
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see ``open_regular``)."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CorruptFileError(str(path), f"{size} bytes, more than the {limit} castate ever writes there")
        parts = []
        while size > 0:
            chunk = os.read(fd, size)
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with naming(path):
        fd = osio.open_fd(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            osio.fsync(fd)
        finally:
            os.close(fd)


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create ``path`` (``mode``) and its missing parents, private too: a store's secrets are
    no safer than the least private directory castate created on the way to it."""
    if path.is_dir():
        return
    if path.parent != path and not path.parent.is_dir():
        make_dirs(path.parent, mode)
    try:
        osio.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir():
            raise


def store_dir(path: Path) -> None:
    """Create ``path`` if missing, then make sure it is a directory of its own: a symlink
    there (``packs`` -> elsewhere) would make the store write outside itself. The store's
    root may be a symlink; the directories inside it may not."""
    make_dirs(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise CorruptFileError(str(path), f"{what}: castate follows no link inside a store and writes only there")


def exposed(paths: list[Path]) -> list[str]:
    """Those of ``paths`` (that exist) which other users can read or write, with their modes."""
    out = []
    for path in paths:
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            out.append(f"{path} ({mode:04o})")
    return out


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a short write is not an error by itself)."""
    view = memoryview(data)
    while view:
        n = osio.write(fd, view)
        if n <= 0:
            raise OSError("write returned 0 bytes")
        view = view[n:]


def atomic_write(
    path: Path, data: bytes, *, durable: bool = True, exclusive: bool = False, point: str = "file-before-rename"
) -> bool:
    """Replace (or with ``exclusive``, create) ``path`` with ``data`` so readers see old or new.

    Returns False when ``exclusive`` and the file already exists (nothing written). ``point``
    names the crash point between the write and the rename (tests only).
    """
    tmp = path.with_name(f".tmp-{path.name}-{os.urandom(6).hex()}")
    fd = osio.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            with naming(tmp):
                write_all(fd, data)
                if durable:
                    osio.fsync(fd)
        finally:
            os.close(fd)
        crashpoints.reach(point)
        if exclusive:
            try:
                osio.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                osio.unlink(tmp)
        else:
            osio.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return True
