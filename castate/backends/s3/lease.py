"""gc's lock without a lock server: a lease in the root ref group (``refs/root``).

``lock`` ({"t": token, "n": counter}) is gc's exclusive lock; ``shared`` ({token: counter}) the
holders of the shared side (imports, forks, checkpoints with metadata). Both are taken and
given back by conditional writes of the root object, and renewed by rewriting it with the
counter one higher every ``gc_lease / 4`` seconds. A waiter that sees a holder's counter
unchanged for ``gc_lease`` seconds of its own clock takes it as dead: no two clocks are ever
compared. After taking the lock, gc waits for the shared holders to leave and until ``GC_WAIT x
save_window`` seconds have passed since it took the lock: a save that read the root before the
lock landed sends its ref write within half a window of that read (else it reads the root
again) and the write lands within a window, so it has landed with half a window to spare
(backend.py, ``SEND_WITHIN``); then gc reads refs and deletes. While it deletes,
each batch first checks that the lock is still its own (``_fence``): a gc that stalled past
its lease stops instead of deleting under another gc.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import random
import time
from collections.abc import AsyncIterator, Callable

from castate.backends.s3.groups import ROOT, Group
from castate.backends.s3.requests import S3Requests, Stale
from castate.errors import StoreError

ATTEMPTS = 256  # conditional writes of the root before a lock operation gives up
GC_WAIT = 2.0  # save windows gc waits after taking its lock (see backend.SEND_WITHIN)


class GcLease(S3Requests):
    """``gc_exclusive`` and ``gc_shared`` for ``S3Backend``."""

    gc_lease: float
    save_window: float
    lock_timeout: float
    _seen: dict[tuple[str, str], tuple[int, float]]
    _gc_token: contextvars.ContextVar[str]
    _shared_token: contextvars.ContextVar[str]

    async def _load(self, group: str) -> Group:  # pragma: no cover - S3Backend's
        raise NotImplementedError

    async def _put_group(self, new: Group, what: str) -> None:  # pragma: no cover - S3Backend's
        raise NotImplementedError

    async def _gate(self, root: Group) -> bool:
        """Whether a save that read ``root`` may go on: no live gc holds the lock. A holder taken
        as dead is removed from the root first, so that one that was only stalled finds its lock
        gone at its next fence and deletes nothing."""
        lock = root.extra.get("lock")
        if not lock or lock["t"] == self._gc_token.get():
            return True
        if not self._dead("gc", lock["t"], lock["n"]):
            return False

        def drop(new: Group) -> bool:
            if new.extra.get("lock") != lock:
                return False  # renewed, released or replaced meanwhile: read again
            del new.extra["lock"]
            return True

        await self._change_root(drop, "commit (a dead gc's lock)")
        return False  # read the root again: it may hold a new lock by now

    def _dead(self, kind: str, token: str, n: int) -> bool:
        """A lease holder whose counter this process has seen unchanged for ``gc_lease`` seconds."""
        now = time.monotonic()
        seen = self._seen.get((kind, token))
        if seen is None or seen[0] != n:
            self._seen[(kind, token)] = (n, now)
            return False
        return now - seen[1] > self.gc_lease

    async def _change_root(self, change: Callable[[Group], bool], what: str) -> bool:
        """Apply ``change`` to the root by compare-and-swap until it lands; ``change`` returns
        False when there is nothing (more) to do, and so does this."""
        for _ in range(ATTEMPTS):
            root = await self._load(ROOT)
            new = root.successor()
            if not change(new):
                return False
            try:
                await self._put_group(new, what)
                return True
            except Stale:
                await asyncio.sleep(random.uniform(0, 0.01))
        raise StoreError(f"{what}: the root ref group of {self.location} kept changing")

    async def _wait(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise StoreError(f"timed out after {self.lock_timeout:.0f}s waiting for {what} on {self.location}")
        await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        """Take the lock in the root group, wait for shared holders to leave and for the save
        window to pass (commits that read the root before the lock landed finish in it), then
        let gc delete. The lock is renewed while held."""
        self._store()
        if self._gc_token.get():
            raise StoreError(f"gc_exclusive is already held by this task on {self.location}")
        token = os.urandom(12).hex()
        deadline = time.monotonic() + self.lock_timeout

        def take(new: Group) -> bool:
            lock = new.extra.get("lock")
            if lock and not self._dead("gc", lock["t"], lock["n"]):
                raise _Busy
            new.extra["lock"] = {"t": token, "n": 0}
            return True

        while True:
            try:
                await self._change_root(take, "gc_exclusive")
                break
            except _Busy:
                await self._wait(deadline, "another gc")
        taken = time.monotonic()
        ctx = self._gc_token.set(token)
        renew = asyncio.create_task(self._renew("lock", token))
        try:
            while True:
                root = await self._load(ROOT)
                shared = root.extra.get("shared") or {}
                dead = {t for t, n in shared.items() if self._dead("shared", t, n)}
                if dead:
                    await self._change_root(functools.partial(_drop_shared, tokens=dead), "gc_exclusive")
                if not set(shared) - dead:
                    break
                await self._wait(deadline, "imports")
            rest = taken + self.save_window * GC_WAIT - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(ValueError):
                self._gc_token.reset(ctx)

            def release(new: Group) -> bool:
                lock = new.extra.get("lock")
                if not lock or lock["t"] != token:
                    return False
                del new.extra["lock"]
                return True

            with contextlib.suppress(StoreError):  # the lease ends it anyway
                await self._change_root(release, "gc_exclusive")

    async def _fence(self, what: str) -> None:
        """gc deletes only while its lock is still its own (a stalled gc whose lease lapsed stops)."""
        token = self._gc_token.get()
        if token:
            lock = (await self._load(ROOT)).extra.get("lock")
            if not lock or lock["t"] != token:
                raise StoreError(
                    f"{what}: gc lost its lock on {self.location} (it stalled past its lease); nothing deleted"
                )

    async def _renew(self, field: str, token: str) -> None:
        def bump(new: Group) -> bool:
            if field == "lock":
                lock = new.extra.get("lock")
                if not lock or lock["t"] != token:
                    return False
                lock["n"] += 1
                return True
            shared = new.extra.get("shared") or {}
            if token not in shared:
                return False
            shared[token] += 1
            return True

        while True:
            await asyncio.sleep(self.gc_lease / 4)
            with contextlib.suppress(StoreError):
                if not await self._change_root(bump, "renew gc lease"):
                    return

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """Join the shared holders in the root group (refused while gc holds the lock); the
        holding task's commits then skip the gate, since gc waits for them to leave."""
        self._store()
        token = os.urandom(12).hex()
        deadline = time.monotonic() + self.lock_timeout

        def join(new: Group) -> bool:
            lock = new.extra.get("lock")
            if lock and lock["t"] != self._gc_token.get():
                if not self._dead("gc", lock["t"], lock["n"]):
                    raise _Busy
                del new.extra["lock"]  # a dead gc's: it goes (a stalled one then stops at its fence)
            new.extra.setdefault("shared", {})[token] = 0
            return True

        while True:
            try:
                await self._change_root(join, "gc_shared")
                break
            except _Busy:
                await self._wait(deadline, "gc")
        ctx = self._shared_token.set(token)
        renew = asyncio.create_task(self._renew("shared", token))
        try:
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(ValueError):
                self._shared_token.reset(ctx)
            with contextlib.suppress(StoreError):
                await self._change_root(lambda new: _drop_shared(new, {token}), "gc_shared")


class _Busy(Exception):
    """The lock is held by a live holder: wait."""


def _drop_shared(new: Group, tokens: set[str]) -> bool:
    shared = new.extra.get("shared") or {}
    if not tokens & set(shared):
        return False
    new.extra["shared"] = {t: n for t, n in shared.items() if t not in tokens}
    return True
