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
(backend.py, ``SEND_WITHIN``); then gc reads refs and deletes.

A holder that was only stalled (stopped, swapped out) past its lease must not act on it: a
waiter takes it as dead once it saw the counter unchanged for ``gc_lease``, which is at least
``gc_lease`` after the holder sent its last renewal. So right before each delete batch and
each ref move, a holder (gc, or a ``gc_shared`` holder such as an import) reads the root and
checks that its lock or token is still there (``_fence``), then, just before the request
leaves, that its last confirmed renewal was sent less than ``gc_lease - save_window`` ago
(``_lease_fresh``, on its own monotonic clock): a request that lands within a window then
lands before any waiter can take the holder as dead. Renewals every ``gc_lease / 4`` keep that
true for a live holder (``gc_lease >= 2 x save_window`` is required).
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


class _Held:
    """A lease this process holds: when its last confirmed write (take or renewal) was sent,
    and whether a renewal found it gone."""

    def __init__(self, sent: float) -> None:
        self.confirmed = sent
        self.lost = False


class GcLease(S3Requests):
    """``gc_exclusive`` and ``gc_shared`` for ``S3Backend``."""

    gc_lease: float
    save_window: float
    lock_timeout: float
    _seen: dict[tuple[str, str], tuple[int, float]]
    _held: dict[str, _Held]  # token -> the lease as this process holds it
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

    async def _enter(self, change: Callable[[Group], bool], action: str, deadline: float, holder: str) -> float:
        """Apply ``change`` to the root, waiting while it finds ``holder`` in the way (it raises
        _Busy) until ``deadline``; the monotonic time the winning write was sent."""
        while True:
            sent = time.monotonic()
            try:
                await self._change_root(change, action)
                return sent
            except _Busy:
                await self._wait(deadline, holder)

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
        await self._writable()
        token = os.urandom(12).hex()
        deadline = time.monotonic() + self.lock_timeout

        def take(new: Group) -> bool:
            lock = new.extra.get("lock")
            if lock and not self._dead("gc", lock["t"], lock["n"]):
                raise _Busy
            new.extra["lock"] = {"t": token, "n": 0}
            return True

        sent = await self._enter(take, "gc_exclusive", deadline, "another gc")
        taken = time.monotonic()
        self._held[token] = _Held(sent)
        ctx = self._gc_token.set(token)
        renew = asyncio.create_task(self._renew("lock", token))
        try:
            while True:
                root = await self._load(ROOT)
                shared = root.extra.get("shared") or {}
                dead = {t: n for t, n in shared.items() if self._dead("shared", t, n)}
                if dead:
                    await self._change_root(functools.partial(_drop_shared, tokens=dead), "gc_exclusive")
                if not set(shared) - set(dead):
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
            self._held.pop(token, None)
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
        """Before a delete batch or a ref move under a lease: the lock (gc) or the token (the
        shared side) is still in the root, and the lease is fresh (``_lease_fresh``)."""
        gc, shared = self._gc_token.get(), self._shared_token.get()
        if not gc and not shared:
            return
        root = await self._load(ROOT)
        lock = root.extra.get("lock")
        if gc and (not lock or lock["t"] != gc):
            raise StoreError(f"{what}: gc lost its lock on {self.location} (it stalled past its lease); stopped")
        if shared and shared not in (root.extra.get("shared") or {}):
            raise StoreError(
                f"{what}: this import's hold on {self.location} was taken as dead (the process stalled past "
                "its lease, and gc may have run since): nothing written; run it again"
            )
        self._lease_fresh(what)

    def _lease_fresh(self, what: str) -> None:
        """Called right before a request a lease protects leaves: StoreError unless every lease
        this task holds was confirmed less than ``gc_lease - save_window`` ago (on this process's
        clock), so the request lands before any other process can take the holder as dead."""
        limit = self.gc_lease - self.save_window
        for token in (self._gc_token.get(), self._shared_token.get()):
            held = self._held.get(token) if token else None
            if held is None:
                continue
            age = time.monotonic() - held.confirmed
            if held.lost or age > limit:
                raise StoreError(
                    f"{what}: the lease on {self.location} was last renewed {age:.1f}s ago (limit "
                    f"{limit:.1f}s: the process stalled or the store did not answer); stopped before "
                    "sending anything more"
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
            sent = time.monotonic()
            with contextlib.suppress(StoreError):
                if not await self._change_root(bump, "renew gc lease"):
                    if token in self._held:
                        self._held[token].lost = True
                    return
                if token in self._held:
                    self._held[token].confirmed = sent

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """Join the shared holders in the root group (refused while gc holds the lock); the
        holding task's commits then skip the gate, since gc waits for them to leave."""
        self._store()
        await self._writable()
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

        sent = await self._enter(join, "gc_shared", deadline, "gc")
        self._held[token] = _Held(sent)
        ctx = self._shared_token.set(token)
        renew = asyncio.create_task(self._renew("shared", token))
        try:
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            self._held.pop(token, None)
            with contextlib.suppress(ValueError):
                self._shared_token.reset(ctx)
            with contextlib.suppress(StoreError):
                await self._change_root(lambda new: _drop_shared(new, {token: None}), "gc_shared")


class _Busy(Exception):
    """The lock is held by a live holder: wait."""


def _drop_shared(new: Group, tokens: dict[str, int | None]) -> bool:
    """Remove shared holders: each token whose counter is still the one given (None: any)."""
    shared = new.extra.get("shared") or {}
    gone = {t for t, n in tokens.items() if t in shared and (n is None or shared[t] == n)}
    if not gone:
        return False
    new.extra["shared"] = {t: n for t, n in shared.items() if t not in gone}
    return True
