"""File-system primitives with the durability rules castate relies on.

Whole files are written atomically: temp file in the same directory, write, fsync,
rename, fsync the directory. Created files and directories are private to the owner
(0600 / 0700), since workflow state often holds secrets.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a short write is not an error by itself)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError("write returned 0 bytes")
        view = view[n:]


def atomic_write(path: Path, data: bytes, *, durable: bool = True, exclusive: bool = False) -> bool:
    """Replace (or with ``exclusive``, create) ``path`` with ``data`` so readers see old or new.

    Returns False when ``exclusive`` and the file already exists (nothing written).
    """
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return True
