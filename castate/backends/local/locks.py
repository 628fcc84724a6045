"""Inter-process locks on lock files (flock), usable from worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from castate.backends.local.files import FILE_MODE
from castate.errors import StoreError


class FileLock:
    """A shared/exclusive flock on one file, plus a thread lock so threads of one process queue.

    flock locks belong to an open file description, so each FileLock opens its own
    descriptor: two FileLocks on one path exclude each other even within one process.

    flock favours no one: while shared holders overlap without a gap, an exclusive waiter
    waits forever. With a ``turnstile`` file, every taker passes it first (shared takers
    shared, exclusive takers exclusive) and leaves it once it holds the lock: an exclusive
    waiter holds the turnstile, so new shared takers queue behind it instead of starving it.
    """

    def __init__(self, path: Path, timeout: float = 60.0, *, turnstile: Path | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.turnstile = FileLock(turnstile, timeout) if turnstile is not None else None
        self._fd: int | None = None
        self._thread_lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            try:  # never through a symlink: it would create or lock a file outside the store
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StoreError(
                        f"lock file {self.path} is a symlink: castate follows no link in a store"
                    ) from None
                raise
        return self._fd

    @contextmanager
    def hold(self, exclusive: bool = True, blocking: bool = True) -> Iterator[bool]:
        """Hold the lock for the block; yields False when ``blocking`` is off and it is taken."""
        if not self._thread_lock.acquire(timeout=self.timeout if blocking else 0):
            if not blocking:
                yield False
                return
            raise StoreError(f"timed out after {self.timeout:.0f}s waiting for {self.path}")
        try:
            fd = self._open()
            op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            if self.turnstile is None:
                got = self._flock(fd, op, blocking)
            else:
                with self.turnstile.hold(exclusive=exclusive, blocking=blocking) as passed:
                    got = passed and self._flock(fd, op, blocking)
            if not got:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _flock(self, fd: int, op: int, blocking: bool) -> bool:
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking:
                    return False
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"timed out after {self.timeout:.0f}s waiting for {self.path} "
                        "(another castate process holds it)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    @contextlib.asynccontextmanager
    async def hold_async(self, exclusive: bool = True) -> AsyncIterator[None]:
        """``hold`` for async code: waits in a worker thread, so the event loop keeps running."""
        held = self.hold(exclusive=exclusive)
        await asyncio.to_thread(held.__enter__)
        try:
            yield
        finally:
            await asyncio.to_thread(held.__exit__, None, None, None)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.turnstile is not None:
            self.turnstile.close()
