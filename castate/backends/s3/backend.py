"""The S3 blob backend: a castate store in a bucket of any S3-compatible object store.

Keys under the store's prefix (docs/format.md §4.4)::

    castate.json              marker: {"castate": "store", "version": 2, "id", "save_window", "gc_lease"}
    blobs/<name>              one blob (pack, index segment...), written create-only (If-None-Match: *)
    refs/root                 the root ref group: refs outside sessions and kv, and the gc lock
    refs/s/<hash>             the refs of one session (head and checkpoints) with their reflog
    refs/k/<hash>             one kv ref with its reflog
    reflog/<hash>/<gen>-<id>  reflog entries spilled from a group object (immutable)
    probe/<random>            written and deleted before the first write, to test conditional writes

A group object moves by one conditional PUT (If-Match: its ETag; If-None-Match: * when new);
``castate.backends.s3.groups`` has its format. A save is ``commit(blobs, updates, checks)``:
the root group is read (the gc lock, and the ``castate/epoch`` check; a read less than a
quarter of a save window old that saw no lock is reused), the blobs are PUT create-only (the last, a save's
index segment, after the others), then the session's group is written once. A commit whose refs span
several groups writes them one by one in key order and undoes the written ones when a later
one conflicts; when a later one's outcome is unknown (a lost reply), or after a crash, the
groups written so far stay (each whole, each logged) and the error says the commit may be
partly applied.

gc without a lock server: gc takes the lock in the root object (a conditional write), then
waits ``2 x save_window`` seconds before it reads refs or deletes anything. A commit that
stores blobs or has checks reads the root first (at t0) and sends its ref write before
t0 + ``save_window / 2``, or reads the root again. Such a commit saw no lock, so gc's lock
landed after t0; its ref write lands by t0 + W/2 + W (a request lands within W), which is
before gc's wait ends with W/2 to spare for a pause between the check and the send.
Holders renew the lock by rewriting it; a holder whose lock did not change for
``gc_lease`` seconds (on the waiter's own clock: no clock is compared with another) is
taken as dead. What this assumes: a request that left a client
lands within ``save_window`` or not at all; processes are not paused for longer than
``save_window / 2`` between their window check and their write (docs/backends.md).

The parts: ``client`` (URL, obstore clients, errors), ``requests`` (the request plumbing),
``blobs`` (the blob calls), ``groups`` (the ref group format), ``lease`` (gc's lock), and this
module (opening, refs, commits, reflog).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import random
import time
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any

import obstore
import obstore.exceptions as oe
import orjson
from obstore.store import S3Store

from castate.backends.base import ReflogEntry, RefUpdate, _Any, check_ref_name, plan_ref_updates
from castate.backends.blob import BlobBackend
from castate.backends.s3.blobs import BlobRequests, unique_blobs
from castate.backends.s3.client import RefusedError, S3Location, first_line, make_store, parse_url
from castate.backends.s3.groups import (
    LOG_INLINE,
    ROOT,
    Group,
    decode_spill,
    encode_spill,
    entry,
    group_key,
    group_of,
    groups_for_prefix,
    log_row,
    spill_key,
)
from castate.backends.s3.lease import GcLease
from castate.backends.s3.requests import Stale, ns_of, settle
from castate.errors import (
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)

STORE_VERSION = 2
MARKER = "castate.json"
CONCURRENCY = 64  # requests in flight per backend object (a restore fetches a chain's packs together)
ATTEMPTS = 64  # conditional writes of one group before a commit gives up
# A gated commit sends its ref write at most this many save windows after its root read; gc
# waits GC_WAIT windows after its lock (lease.py). A commit that read the root unlocked did so
# before gc's lock landed, and its write lands within a window of being sent: by
# (SEND_WITHIN + 1) windows after the read, GC_WAIT - SEND_WITHIN - 1 windows before gc reads.
SEND_WITHIN = 0.5
ORPHAN_GRACE_NS = 3600 * 10**9  # a reflog spill on no chain this old is left over, not in flight


class _Regate(Exception):
    """A gated commit's window passed before its ref write: read the root again."""


class S3Backend(GcLease, BlobRequests, BlobBackend):
    """A castate store under ``s3://bucket/prefix`` (``?endpoint=...&region=...``).

    ``timeout`` bounds each request (seconds); ``lock_timeout`` how long a commit waits for gc
    and gc for the lock; ``save_window`` and ``gc_lease`` are stored in the marker when the
    store is created (every process must use the same) and read from it afterwards.
    ``create``: True creates a store where there is none, False refuses, None refuses until a
    write opens it (what ``castate.open`` does). The bucket must exist.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        lock_timeout: float = 120.0,
        save_window: float = 10.0,
        gc_lease: float = 30.0,
        create: bool | None = True,
    ) -> None:
        self.loc: S3Location = parse_url(url)
        self.location = self.loc.describe()
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.save_window = self.loc.options.get("save_window", save_window)
        self.gc_lease = self.loc.options.get("gc_lease", gc_lease)
        problem = timing_problem(self.save_window, self.gc_lease)
        if problem:
            raise ValueError(problem)
        self.create = create
        self.store_id = ""
        self.requests = 0  # requests sent by this object (for benchmarks)
        self._reads: S3Store | None = None
        self._writes: S3Store | None = None
        self._sem: asyncio.Semaphore | None = None
        self._offset_ns = 0
        self._probed = False  # conditional writes checked (before this object's first write)
        self._probe_tried = False
        self._probe_lock = asyncio.Lock()
        self._cache: dict[str, Group] = {}  # object key -> the group as last read or written
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}  # lease holder -> (counter, first seen)
        self._held = {}  # token -> a lease this process holds (lease.py)
        self._root_seen: tuple[Group, float] | None = None  # the root as last read, and when the read was sent
        self._gc_token: contextvars.ContextVar[str] = contextvars.ContextVar(f"castate-s3-gc-{id(self)}", default="")
        self._shared_token: contextvars.ContextVar[str] = contextvars.ContextVar(
            f"castate-s3-shared-{id(self)}", default=""
        )

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._reads is not None:
            return
        self._reads = make_store(self.loc, timeout=self.timeout, retries=3)
        self._writes = make_store(self.loc, timeout=self.timeout, retries=0)
        self._sem = asyncio.Semaphore(CONCURRENCY)
        try:
            await self._init()
        except BaseException:
            self._reads = self._writes = None
            await settle()
            raise

    async def _outer_store(self) -> str | None:
        """The prefix of a store this one would lie inside (a marker in a parent prefix), if any:
        that store's gc would take this one's objects for its own (docs/backends.md)."""
        parts = self.loc.prefix.split("/") if self.loc.prefix else []
        if not parts:
            return None
        top = make_store(dataclasses.replace(self.loc, prefix=""), timeout=self.timeout, retries=3)
        parents = ["/".join(parts[:i]) for i in range(len(parts))]

        async def has_marker(parent: str) -> bool:
            key = f"{parent}/{MARKER}" if parent else MARKER
            try:
                await self._call("open", lambda: obstore.head_async(top, key))
            except FileNotFoundError:
                return False
            except StoreError:
                return False  # e.g. no right to read outside the prefix: nothing to say
            return True

        found = [p for p, ok in zip(parents, await self._gather([has_marker(p) for p in parents]), strict=True) if ok]
        return found[-1] if found else None

    async def _init(self) -> None:
        outer = await self._outer_store()
        if outer is not None:
            raise StoreError(
                f"{self.location} lies inside the castate store at s3://{self.loc.bucket}/{outer}: stores "
                "must not nest (the outer store's gc would delete this one's objects); choose another prefix"
            )
        found = await self._get(MARKER, "open")
        if found is None:
            if self.create is not True:
                later = " (a save creates it)" if self.create is None else ""
                raise StoreNotFoundError(f"no castate store at {self.location}{later}")
            await self._writable()
            marker = {
                "castate": "store",
                "version": STORE_VERSION,
                "id": os.urandom(16).hex(),
                "created_ns": time.time_ns(),
                "save_window": self.save_window,
                "gc_lease": self.gc_lease,
            }
            with contextlib.suppress(oe.AlreadyExistsError, oe.PreconditionError):  # another process was first
                await self._call(
                    "open", lambda: obstore.put_async(self._store(), MARKER, orjson.dumps(marker), mode="create")
                )
            found = await self._get(MARKER, "open")
            if found is None:
                raise StoreError(f"{self.location}: the store marker vanished right after it was written")
        try:
            meta = orjson.loads(found[0])
            version = meta["version"]
            if meta.get("castate") != "store" or type(version) is not int:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.location}: {MARKER} is not a castate store marker") from None
        if version != STORE_VERSION:
            raise UnsupportedFormatError(
                f"store {self.location} has format version {version}; this castate reads {STORE_VERSION}"
            )
        self.store_id = str(meta.get("id", ""))
        try:
            save_window = float(meta.get("save_window", self.save_window))
            gc_lease = float(meta.get("gc_lease", self.gc_lease))
        except (TypeError, ValueError):
            raise StoreError(f"{self.location}: {MARKER} has a save_window or gc_lease that is no number") from None
        problem = timing_problem(save_window, gc_lease)
        if problem:
            raise StoreError(f"{self.location}: {MARKER}: {problem}")
        self.save_window, self.gc_lease = save_window, gc_lease

    async def _writable(self) -> None:
        """Probe the server once, before this object's first write: a store opened only for
        reading (read-only credentials: ``castate sessions``, the read-only UI) sends no write."""
        if self._probed:
            return
        async with self._probe_lock:
            if not self._probed:
                await self._probe()
                self._probed = True

    async def _probe(self) -> None:
        """Refuse a server that ignores conditional writes: every ref move relies on them.

        Also measures how far the server's clock (LastModified) is from this machine's."""
        key = f"probe/{os.urandom(12).hex()}"
        store = self._store(write=True)
        before = time.time_ns()
        first = await self._call("open (probe)", lambda: obstore.put_async(store, key, b"1", mode="create"))
        after = time.time_ns()
        ignored = []
        try:
            await self._call("open (probe)", lambda: obstore.put_async(store, key, b"2", mode="create"))
            ignored.append("If-None-Match: * (a second create-only PUT succeeded)")
        except (oe.AlreadyExistsError, oe.PreconditionError):
            pass
        try:
            await self._call("open (probe)", lambda: obstore.put_async(store, key, b"3", mode={"e_tag": '"0"'}))
            ignored.append("If-Match (a PUT with a wrong ETag succeeded)")
        except (oe.PreconditionError, FileNotFoundError):
            pass
        head = await self._call("open (probe)", lambda: obstore.head_async(self._store(), key))
        await self._call("open (probe)", lambda: obstore.delete_async(self._store(), key))
        if ignored:
            raise StoreError(
                f"{self.location}: the server ignores conditional writes ({'; '.join(ignored)}): castate "
                "cannot move refs safely there. Use a server that honours them (AWS S3 and SeaweedFS do; "
                "s3rver does not)."
            )
        if first.get("e_tag") is None:
            raise StoreError(f"{self.location}: the server returns no ETag on PUT; castate needs them for refs")
        # LastModified has one-second resolution: only a clear offset is applied.
        offset = ns_of(head["last_modified"]) - (before + after) // 2
        self._offset_ns = offset if abs(offset) > 2_000_000_000 else 0

    async def close(self) -> None:
        opened = self._reads is not None
        self._reads = self._writes = None
        self._sem = None
        self._cache.clear()
        self._root_seen = None
        self._probed = self._probe_tried = False
        if opened:
            await settle()

    async def now_ns(self) -> int:
        """This machine's clock, moved by the server's offset when the probe found a clear one
        (tried once here if no write probed yet; a read-only credential keeps this clock)."""
        if not self._probed and not self._probe_tried and self._reads is not None:
            self._probe_tried = True
            with contextlib.suppress(StoreError):
                await self._writable()
        return time.time_ns() + self._offset_ns

    # -- ref groups -------------------------------------------------------------------------------------

    async def _load(self, group: str) -> Group:
        """The group as stored now (a conditional GET when this process has it cached)."""
        key = group_key(group)
        cached = self._cache.get(key)
        sent = time.monotonic()
        try:
            found = await self._get(key, "read refs", cached.etag if cached is not None else None)
        except oe.NotModifiedError:
            assert cached is not None
            g = cached
        else:
            g = Group(group) if found is None else Group.decode(group, found[1], found[0], key)
            self._cache[key] = g
        if group == ROOT:
            self._root_seen = (g, sent)
        return g

    def _recent_root(self) -> tuple[Group, float] | None:
        """The root as read less than a quarter of a save window ago, unlocked and not rewritten
        by this process since: a save may rely on it as on a read of its own (it must still send
        its ref write within half a window of that read; gc waits two windows after its lock)."""
        seen = self._root_seen
        if seen is None or seen[0] is not self._cache.get(group_key(ROOT)) or "lock" in seen[0].extra:
            return None
        return seen if time.monotonic() - seen[1] < self.save_window / 4 else None

    async def _load_listed(self, key_prefix: str) -> list[Group]:
        """Every group under ``key_prefix``: one LIST, then a GET of each one whose ETag changed."""
        metas = await self._list(key_prefix)

        async def one(meta: Any) -> Group:
            key = meta["path"]
            cached = self._cache.get(key)
            if cached is not None and cached.etag == meta["e_tag"]:
                return cached
            found = await self._get(key, "list_refs")
            if found is None:
                return Group("?")  # deleted since the listing (never done by castate)
            try:
                name = str(orjson.loads(found[0])["group"])
            except (ValueError, KeyError, TypeError):
                raise StoreError(f"ref group object {key} is damaged") from None
            if group_key(name) != key:
                raise StoreError(f"ref group object {key} names group {name[:60]!r}, which belongs elsewhere")
            g = Group.decode(name, found[1], found[0], key)
            self._cache[key] = g
            return g

        return await self._gather([one(m) for m in metas])

    async def _all_groups(self) -> list[Group]:
        sessions, kv, root = await asyncio.gather(
            self._load_listed("refs/s/"), self._load_listed("refs/k/"), self._load(ROOT)
        )
        return [*sessions, *kv, root]

    async def _put_group(self, new: Group, what: str) -> None:
        """Write ``new`` (a successor) if its object still has ``new.etag``; Stale otherwise. A
        lost reply is resolved by reading the object back: our write id there means it landed."""
        key = group_key(new.name)
        data = new.encode()
        mode: Any = "create" if new.etag is None else {"e_tag": new.etag}

        async def send() -> Any:
            if what == "commit":
                self._lease_fresh(what)  # under a lease: the last moment before the write leaves
            return await obstore.put_async(self._store(write=True), key, data, mode=mode)

        try:
            result = await self._call(what, send, write=True)
        except (oe.AlreadyExistsError, oe.PreconditionError, FileNotFoundError):
            self._cache.pop(key, None)
            raise Stale from None
        except RefusedError as exc:
            self._cache.pop(key, None)
            if exc.status == 409:  # AWS: a conflicting conditional write was in progress; not applied
                raise Stale from None
            raise
        except BackendUnavailableError:
            self._cache.pop(key, None)
            with contextlib.suppress(StoreError):
                now = await self._load(new.name)
                if now.w == new.w:
                    return
            raise
        etag = result.get("e_tag")
        if etag is None:
            raise StoreError(f"{what}: {self.location} returned no ETag for {key}")
        new.etag = etag
        self._cache[key] = new

    async def _spill(self, new: Group, added: int) -> str | None:
        """Keep the group object small: past ``LOG_INLINE`` entries, the entries before the
        ``added`` ones are stored first as an immutable object the group then points at (its
        key is returned: the caller deletes it if the group write does not land)."""
        if len(new.log) <= LOG_INLINE or len(new.log) == added:
            return None
        key = spill_key(new)
        old, new.log = new.log[:-added] if added else new.log, new.log[-added:] if added else []
        data = encode_spill(old, new.spill)
        with contextlib.suppress(oe.AlreadyExistsError, oe.PreconditionError):  # a retry after our PUT landed
            await self._call("commit (reflog)", lambda: obstore.put_async(self._store(), key, data, mode="create"))
        new.spill = key
        return key

    async def _drop_spill(self, key: str | None) -> None:
        """Delete a spill whose group write is known not to have landed (best effort: a spill
        left behind is on no chain, and ``expire_reflog`` removes it later)."""
        if key is not None:
            with contextlib.suppress(StoreError):
                await self._call("commit (reflog)", lambda: obstore.delete_async(self._store(), key))

    # -- refs -------------------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(names))
        groups = await self._gather([self._load(g) for g in dict.fromkeys(map(group_of, wanted))])
        refs = {n: v for g in groups for n, v in g.refs.items()}
        return {n: refs[n] for n in wanted if n in refs}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        listed, single = groups_for_prefix(prefix)
        calls: list[Awaitable[Any]] = [self._load_listed(p) for p in listed]
        if single is not None:
            calls.append(self._load(single))
        groups: list[Group] = []
        for got in await self._gather(calls):
            groups.extend(got if isinstance(got, list) else [got])
        out = {n: v for g in groups for n, v in g.refs.items() if n.startswith(prefix)}
        return dict(sorted(out.items()))

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        """Blobs (create-only), then one conditional write per ref group touched (one for a save).

        A commit that stores blobs or has checks first reads the root group (the gc lock and
        root checks), then stores its blobs, then moves its refs: no blob is written while gc
        holds the lock. docs/format.md has the protocol."""
        unique = unique_blobs(blobs)
        checks = dict(checks or {})
        for name in checks:
            check_ref_name(name)
        for u in updates:
            check_ref_name(u.name)
        if not unique and not updates and not checks:
            return 0
        await self._writable()
        exempt = bool(self._gc_token.get() or self._shared_token.get())
        gated = bool(unique or checks) and not exempt
        by_group: dict[str, list[RefUpdate]] = {}
        for u in updates:
            by_group.setdefault(group_of(u.name), []).append(u)
        order = sorted(by_group, key=group_key)
        inner = {n: v for n, v in checks.items() if group_of(n) in by_group}
        outer = {n: v for n, v in checks.items() if group_of(n) not in by_group}
        stored = asyncio.ensure_future(self.put_blobs(list(unique.items()))) if unique and not gated else None
        try:
            delay = 0.005
            deadline = time.monotonic() + self.lock_timeout
            root: Group | None = None
            while True:
                t0 = time.monotonic()
                recent = self._recent_root() if gated else None
                if recent is not None:  # consecutive saves: no root read each time
                    root, t0 = recent
                elif gated or group_of_any(outer, ROOT):
                    root = await self._load(ROOT)
                    if gated and not await self._gate(root):
                        if time.monotonic() > deadline:
                            raise StoreError(
                                f"commit: timed out after {self.lock_timeout:.0f}s waiting for gc on {self.location}"
                            )
                        await asyncio.sleep(delay)  # gc holds the lock: nothing written yet
                        delay = min(delay * 2, 0.2)
                        continue
                if unique and stored is None:
                    stored = asyncio.ensure_future(self.put_blobs(list(unique.items())))
                others = [g for g in dict.fromkeys(map(group_of, outer)) if g != ROOT]
                seen = {g.name: g for g in await self._gather([self._load(g) for g in others])}
                if root is not None:
                    seen[ROOT] = root
                failed = [n for n, want in outer.items() if seen[group_of(n)].refs.get(n) != want]
                if failed and recent is not None and group_of(failed[0]) == ROOT:
                    self._root_seen = None  # decide on a fresh read, not on the one reused
                    continue
                if failed:
                    name = failed[0]
                    raise _check_conflict(name, seen[group_of(name)].refs.get(name), outer[name])
                written = await stored if stored is not None else 0
                if not order:
                    return written
                window_end = t0 + self.save_window * SEND_WITHIN if gated else None
                try:
                    await self._apply(order, by_group, inner, message, window_end)
                except _Regate:
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"commit: gave up after {self.lock_timeout:.0f}s on {self.location}: every attempt "
                            f"took longer than half the store's save window ({self.save_window:g}s) between its "
                            "read of the root and its ref write (a slow link or an overloaded process)"
                        ) from None
                    continue
                return written
        finally:
            if stored is not None and not stored.done():
                stored.cancel()
                with contextlib.suppress(BaseException):
                    await stored

    async def _apply(
        self,
        order: list[str],
        by_group: dict[str, list[RefUpdate]],
        checks: dict[str, bytes | None],
        message: str,
        window_end: float | None,
    ) -> None:
        if len(order) > 1:
            # Several groups are written one by one: check every expectation on fresh reads
            # first, so that a conflict found now leaves nothing to undo.
            for g in await self._gather([self._load(name) for name in order]):
                for ref, want in checks.items():
                    if group_of(ref) == g.name and g.refs.get(ref) != want:
                        raise _check_conflict(ref, g.refs.get(ref), want)
                plan_ref_updates(g.refs, by_group[g.name])
        done: list[tuple[Group, Group]] = []
        for name in order:
            mine = {n: v for n, v in checks.items() if group_of(n) == name}
            try:
                done.append(
                    await self._write_group(name, by_group[name], mine, message, window_end if not done else None)
                )
            except (ConflictError, RefusedError, _Regate):
                # this group's write is known not to have landed: put the earlier ones back
                for old, new in reversed(done):
                    await self._undo(old, new)
                raise
            except Exception as exc:
                if not done:
                    raise
                # The outcome of this write is unknown (a lost reply, an outage): undoing the
                # earlier groups could leave only the later ones. Leave them and say so.
                written = ", ".join(repr(new.name[:60]) for _, new in done)
                raise BackendUnavailableError(
                    f"a commit over several ref groups on {self.location} may be partly applied: group(s) "
                    f"{written} were written, and whether group {name[:60]!r} was is unknown ({exc}). Each "
                    "group moved whole or not at all: reload the refs (and the reflog) to see"
                ) from exc

    async def _write_group(
        self,
        name: str,
        updates: list[RefUpdate],
        checks: dict[str, bytes | None],
        message: str,
        window_end: float | None,
    ) -> tuple[Group, Group]:
        """Apply ``updates`` to one group by compare-and-swap: (the group before, after)."""
        key = group_key(name)
        cached = self._cache.get(key)
        g, fresh = (cached, False) if cached is not None else (await self._load(name), True)
        for attempt in range(ATTEMPTS):
            try:
                for ref, want in checks.items():
                    if g.refs.get(ref) != want:
                        raise _check_conflict(ref, g.refs.get(ref), want)
                changes = plan_ref_updates(g.refs, updates)
            except ConflictError:
                if fresh:
                    raise
                g, fresh = await self._load(name), True  # the cached copy may be old: decide on the stored one
                continue
            new = g.successor()
            now = max(await self.now_ns(), max((int(r[3]) for r in g.log), default=0))
            for ref, old, target in changes:
                if target is None:
                    new.refs.pop(ref, None)
                else:
                    new.refs[ref] = target
                new.log.append(log_row(ref, old, target, now, message))
            spilled = await self._spill(new, len(changes))
            try:
                if window_end is not None and time.monotonic() > window_end:
                    raise _Regate
                await self._fence("commit")  # under gc's lock or the shared side: the lease still holds
            except (_Regate, StoreError):
                await self._drop_spill(spilled)  # the group write is not sent: the spill is on no chain
                raise
            try:
                await self._put_group(new, "commit")
                return g, new
            except Stale:
                await self._drop_spill(spilled)  # this write lost: its spill is on no chain
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
                g, fresh = await self._load(name), True
            except RefusedError:
                await self._drop_spill(spilled)
                raise
        raise ConflictError(
            f"the refs of group {name[:60]!r} kept changing: gave up after {ATTEMPTS} writes", updates[0].name
        )

    async def _undo(self, old: Group, new: Group) -> None:
        """Put a group back as it was before ``new`` (a later group of the commit conflicted)."""
        now = await self._load(old.name)
        if now.w != new.w:
            raise StoreError(
                f"a commit over several ref groups failed part way on {self.location}, and group "
                f"{old.name[:60]!r} moved again since: its change stays (see the reflog)"
            )
        back = now.successor()
        back.refs, back.log, back.spill = dict(old.refs), list(old.log), old.spill
        try:
            await self._put_group(back, "commit (undo)")
        except Stale:
            raise StoreError(
                f"a commit over several ref groups failed part way on {self.location}, and group "
                f"{old.name[:60]!r} moved while it was undone: its change stays (see the reflog)"
            ) from None

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        """Within one group (a session's checkpoint), one conditional write reads and moves: a ref
        move, so it does not wait for gc. Across groups, the contract's default."""
        check_ref_name(target)
        await self._writable()
        if group_of(source) != group_of(target):
            return await super().copy_ref(source, target, expected=expected, message=message)
        for _ in range(ATTEMPTS):
            g = await self._load(group_of(source))
            value = g.refs.get(source)
            if value is None:
                raise NotFoundError(f"no ref {source}")
            try:
                await self._write_group(g.name, [RefUpdate(target, value, expected)], {source: value}, message, None)
                return value
            except ConflictError as exc:
                if exc.ref == source:
                    continue
                raise
        raise ConflictError(f"ref {source} kept moving while it was copied", source)

    # -- reflog -----------------------------------------------------------------------------------------

    async def _rows(self, g: Group) -> tuple[list[list[Any]], list[tuple[str, list[list[Any]]]]]:
        """A group's reflog rows, oldest first, and its spill objects (key, rows) newest first."""
        spills: list[tuple[str, list[list[Any]]]] = []
        if g.spill is not None:
            folder = g.spill.rpartition("/")[0] + "/"
            keys = [m["path"] for m in await self._list(folder)]
            got = dict(zip(keys, await self._gather([self._get(k, "reflog") for k in keys]), strict=True))
            key: str | None = g.spill
            while key is not None and got.get(key) is not None:
                if len(spills) >= len(keys) or any(key == k for k, _ in spills):  # a damaged chain loops
                    raise StoreError(
                        f"reflog of ref group object {group_key(g.name)} is damaged: its spill chain "
                        f"comes back to {key}"
                    )
                rows, prev = decode_spill(got[key][0], key)
                spills.append((key, rows))
                key = prev
        rows = [r for _, part in reversed(spills) for r in part] + g.log
        return [r for r in rows if int(r[3]) >= g.expired], spills

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        groups = [await self._load(group_of(name))] if name is not None else await self._all_groups()
        parts = await self._gather([self._rows(g) for g in groups])
        rows = [r for rows, _ in parts for r in rows if name is None or r[0] == name]
        return [entry(r) for r in sorted(rows, key=lambda r: int(r[3]))]

    async def expire_reflog(self, before_ns: int) -> int:
        await self._writable()
        dropped = 0
        on_chain: set[str] = set()
        for g in await self._all_groups():
            for _ in range(ATTEMPTS):
                rows, spills = await self._rows(g)
                on_chain.update(k for k, _ in spills)
                gone = sum(1 for r in rows if int(r[3]) < before_ns)
                if not gone:
                    break
                new = g.successor()
                new.expired = max(g.expired, before_ns)
                new.log = [r for r in g.log if int(r[3]) >= before_ns]
                try:
                    await self._put_group(new, "expire_reflog")
                except Stale:
                    g = await self._load(g.name)
                    continue
                dropped += gone
                # spills holding only expired entries go; the chain ends where they did
                old = [k for k, part in spills if all(int(r[3]) < before_ns for r in part)]
                if old:
                    await self._call("expire_reflog", lambda k=old: obstore.delete_async(self._store(), k))  # type: ignore[misc]
                break
        await self._drop_orphan_spills(on_chain, before_ns)
        return dropped

    async def _drop_orphan_spills(self, on_chain: set[str], before_ns: int) -> None:
        """Delete spills on no group's chain (their group write lost a race, or its reply was
        lost, or the writer died in between) written before ``before_ns`` and more than
        ``ORPHAN_GRACE_NS`` ago: a younger one may belong to a group write still in flight."""
        cutoff = min(before_ns, await self.now_ns() - ORPHAN_GRACE_NS)
        orphans = [
            m["path"]
            for m in await self._list("reflog/")
            if m["path"] not in on_chain and ns_of(m["last_modified"]) < cutoff
        ]
        for i in range(0, len(orphans), 1000):
            keys = orphans[i : i + 1000]
            await self._call("expire_reflog", lambda k=keys: obstore.delete_async(self._store(), k))  # type: ignore[misc]

    # -- gc lock: a lease in the root group ---------------------------------------------------------------

    # -- reports --------------------------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        blobs = await self.list_blobs()
        everything = await self._list("")
        return {
            "blobs": len(blobs),
            "blob_bytes": sum(i.size for i in blobs),
            "store_bytes": sum(int(m["size"]) for m in everything),
            "store_objects": len(everything),
        }

    async def check_storage(self) -> list[str]:
        problems = []
        for prefix in ("refs/s/", "refs/k/"):
            try:
                await self._load_listed(prefix)
            except StoreError as exc:
                problems.append(str(exc))
        try:
            await self._load(ROOT)
        except StoreError as exc:
            problems.append(str(exc))
        return problems


MIN_SAVE_WINDOW = 0.1  # seconds: shorter than a request's round trip, every save would read again


def timing_problem(save_window: float, gc_lease: float) -> str:
    """Why ``save_window`` and ``gc_lease`` cannot work together, or ""."""
    if not MIN_SAVE_WINDOW <= save_window <= 3600:
        return f"save_window must be between {MIN_SAVE_WINDOW} and 3600 seconds (got {save_window:g})"
    if not 2 * save_window <= gc_lease <= 3600:
        return f"gc_lease must be between 2 x save_window and 3600 seconds (got {gc_lease:g})"
    return ""


def group_of_any(refs: Mapping[str, Any], group: str) -> bool:
    return any(group_of(n) == group for n in refs)


def _check_conflict(ref: str, have: bytes | None, want: bytes | None) -> ConflictError:
    h = "absent" if have is None else have.hex()[:12]
    w = "absent" if want is None else want.hex()[:12]
    return ConflictError(f"ref {ref} is {h}, expected {w}: another writer moved it", ref)


__all__ = ["STORE_VERSION", "S3Backend", "first_line"]
