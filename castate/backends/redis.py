"""The Redis backend: a shared blob store in a Redis server (redis-py asyncio, Lua scripts).

Keys, under a prefix (``castate:`` unless the URL says ``?prefix=...``), layout version 2::

    <p>store          marker: {"castate": "store", "version": 2, "id": ...}; its absence means data loss
    <p>b:<name>       one blob (a pack, an index...), written with SET NX, never changed
    <p>blobs          sorted set: blob name -> write time (microseconds, the server's clock)
    <p>blobsize       hash: blob name -> size in bytes (so list_blobs is one script call)
    <p>blobbytes      total bytes of the stored blobs
    <p>refs           hash: ref name -> target
    <p>refnames       sorted set of ref names (score 0), for prefix listing
    <p>reflog         stream: one entry per ref change (n, o, w, t, m)
    <p>gc             gc lock: a random token with a lease (PX), renewed while gc runs
    <p>gcshared       sorted set: token -> lease end (ms), one per holder of the shared side
    <p>req:<token>    a done write, kept a minute, so resending it after a lost reply is a no-op

A version-1 store (castate before the pack format) also has ``<p>o:<hex id>`` (one object
frame each), ``<p>objects`` (sorted set of ids) and ``<p>bytes``; opening it bumps the marker
to version 2 and leaves those keys until ``drop_legacy`` (``castate upgrade`` copies them
into packs first). Its ``<p>q:<hex>`` / ``<p>quarantine`` keys, if any, are left alone.

Every write is one Lua script, which Redis runs atomically: a commit checks the marker and
the gc lock, writes the absent blobs (``SET NX``), checks every ref expectation, and only
then moves the refs and appends the reflog. A conflict moves no ref. While gc holds the
lock, commits are refused by the script and wait in the client; since a commit is one
script, no commit is ever between its dedup check and its ref move when gc takes the lock.
gc's deletes carry its token and are refused once its lease has lapsed.

Persistence is the server's business. Without it (no RDB, no AOF) a Redis restart empties
the store: the marker goes too, so every backend that was open raises StoreError on its
next ref operation instead of reporting sessions as missing; a new ``open`` starts an empty
store. With RDB snapshots a restart rolls back to the last snapshot, refs and blobs
together (never a ref without its blobs). With ``appendonly yes`` and
``appendfsync always`` a commit that returned survives a crash. docs/backends.md has more.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from castate.backends.base import ReflogEntry, RefUpdate, _Any, check_ref_name
from castate.backends.blob import BlobBackend, BlobInfo, check_blob_name
from castate.backends.redis_scripts import (
    COMMIT,
    COPY_REF,
    DELETE,
    DROP_LEGACY,
    EXPIRE,
    GC_LEASE,
    GET_REFS,
    LIST_BLOBS,
    LIST_REFS,
    SET_MARKER,
    SHARED_COUNT,
    SHARED_JOIN,
    SHARED_RENEW,
)
from castate.errors import (
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)

T = TypeVar("T")
STORE_VERSION = 2
PAGE = 1000  # names per command or script call (Lua's unpack() takes a few thousand values at most)
PUT_BYTES = 64 << 20  # put_blobs sends at most this many bytes per script call (one blob may be larger)
EXPIRE_BATCH = 5000


def split_url(url: str) -> tuple[str, str]:
    """(redis-py URL without castate's own parameters, key prefix)."""
    parts = urlsplit(url)
    prefix = "castate:"
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "prefix":
            prefix = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


def _mode(expected: bytes | _Any | None) -> tuple[str, bytes]:
    if isinstance(expected, _Any):
        return "any", b""
    return ("absent", b"") if expected is None else ("value", bytes(expected))


class RedisBackend(BlobBackend):
    """A castate store in a Redis database (``redis://host:6379/0``, ``rediss://``, ``unix://``).

    ``timeout`` bounds connecting and each command (seconds); ``lock_timeout`` bounds how
    long a commit waits for gc and gc for the lock; ``gc_lease`` is how long the gc lock
    outlives a gc process that died (it is renewed while gc runs). ``create=False``
    refuses to start a new store where there is none (e.g. after a restart that lost data);
    ``create=None`` refuses until a write opens it (what ``castate.open`` does).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout: float = 30.0,
        lock_timeout: float = 60.0,
        gc_lease: float = 30.0,
        create: bool | None = True,
    ) -> None:
        conn_url, url_prefix = split_url(url)
        self.url = conn_url
        self.prefix = url_prefix if prefix is None else prefix
        if not self.prefix:
            raise ValueError("the Redis key prefix must not be empty")
        self.location = f"{_redact(conn_url)} (prefix {self.prefix})"
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.gc_lease = gc_lease
        self.create = create
        self.store_id = ""
        self._r: aioredis.Redis | None = None
        self._gc_held = False
        # The gc and gc_shared tokens travel with the task that holds them (and the tasks it
        # starts), not with the backend object: a commit from another task of this process
        # must still wait for gc like any other writer.
        self._gc_token: contextvars.ContextVar[str] = contextvars.ContextVar(f"castate-redis-gc-{id(self)}", default="")
        self._shared_token: contextvars.ContextVar[str] = contextvars.ContextVar(
            f"castate-redis-shared-{id(self)}", default=""
        )
        p = self.prefix.encode()
        self._p = p
        self.k_store, self.k_gc, self.k_gcshared = p + b"store", p + b"gc", p + b"gcshared"
        self.k_blobs, self.k_blobsize, self.k_blobbytes = p + b"blobs", p + b"blobsize", p + b"blobbytes"
        self.k_refs, self.k_refnames, self.k_reflog = p + b"refs", p + b"refnames", p + b"reflog"
        self.k_objects, self.k_bytes = p + b"objects", p + b"bytes"  # version 1
        self._scripts: dict[str, Any] = {}

    def _bkey(self, name: str) -> bytes:
        return self._p + b"b:" + name.encode()

    def _okey(self, oid: bytes) -> bytes:
        return self._p + b"o:" + oid.hex().encode()

    def _request_key(self) -> bytes:
        return self._p + b"req:" + os.urandom(16).hex().encode()

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._r is not None:
            return
        r = aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # never resend a write whose outcome is unknown
            retry_on_error=[],
        )
        try:
            await self._guard(lambda: self._init(r), "open", retry=True)
        except BaseException:
            await r.aclose()
            raise
        self._r = r
        for name, src in (
            ("commit", COMMIT),
            ("copy", COPY_REF),
            ("get", GET_REFS),
            ("list", LIST_REFS),
            ("list_blobs", LIST_BLOBS),
            ("delete", DELETE),
            ("drop_legacy", DROP_LEGACY),
            ("expire", EXPIRE),
            ("lease", GC_LEASE),
            ("shared_join", SHARED_JOIN),
            ("shared_count", SHARED_COUNT),
            ("shared_renew", SHARED_RENEW),
        ):
            self._scripts[name] = r.register_script(src)

    async def _init(self, r: aioredis.Redis) -> None:
        with contextlib.suppress(rex.ResponseError):  # CONFIG may be disabled (managed Redis)
            policy = (await r.config_get("maxmemory-policy")).get("maxmemory-policy", "noeviction")
            if policy != "noeviction":
                raise StoreError(
                    f"{self.location} runs with maxmemory-policy {policy}: Redis could evict castate's "
                    "blobs or its gc lock under memory pressure; set maxmemory-policy noeviction"
                )
        marker = {
            "castate": "store",
            "version": STORE_VERSION,
            "id": os.urandom(16).hex(),
            "created_ns": time.time_ns(),
        }
        if self.create is True:
            await r.set(self.k_store, orjson.dumps(marker), nx=True)
        set_marker = r.register_script(SET_MARKER)
        while True:
            raw: bytes | None = await r.get(self.k_store)  # type: ignore[assignment]  # no decode_responses
            if raw is None:
                later = " (a save creates it)" if self.create is None else ""
                raise StoreNotFoundError(f"no castate store at {self.location}{later}")
            meta = self._parse_marker(raw)
            version = meta["version"]
            if version > STORE_VERSION:
                raise UnsupportedFormatError(
                    f"store {self.location} has format version {version}; this castate reads up to "
                    f"{STORE_VERSION} (upgrade castate)"
                )
            if version == STORE_VERSION:
                break
            # Version 1: the blob keys are new keys, so the upgrade is the marker alone; the
            # object keys stay for `castate upgrade`. Castate versions that know only version 1
            # refuse the store from now on, so no old client starts writing objects into it.
            bumped = {**meta, "version": STORE_VERSION, "upgraded_from": version, "upgraded_ns": time.time_ns()}
            await set_marker(keys=[self.k_store], args=[raw, orjson.dumps(bumped)])  # 0: re-read it
        self.store_id = str(meta.get("id", ""))

    def _parse_marker(self, raw: bytes) -> dict[str, Any]:
        try:
            meta = orjson.loads(raw)
            version = meta["version"]
            if meta.get("castate") != "store" or type(version) is not int or version < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.location}: key {self.k_store.decode()} is not a castate store marker") from None
        return dict(meta)

    async def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            await r.aclose()

    def _redis(self) -> aioredis.Redis:
        if self._r is None:
            raise StoreError(f"store {self.location} is not open")
        return self._r

    async def _guard(self, make: Callable[[], Awaitable[T]], what: str, *, retry: bool = False) -> T:
        """Await ``make()``, turning redis-py's errors into castate's.

        ``retry``: the call is safe to send twice (a read, or a write carrying a request key),
        so a connection that turns out dead (a server restart) is replaced once, silently.
        """
        try:
            try:
                return await make()
            except rex.ConnectionError:
                if not retry:
                    raise
                return await make()  # redis-py dropped the dead connection; this one is new
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            unknown = (
                " (the connection broke mid-call: the refs moved whole or not at all; reload to see)"
                if what in ("commit", "update_refs", "copy_ref")
                else ""
            )
            raise BackendUnavailableError(
                f"{what}: lost or could not open the connection to {self.location}: {exc}{unknown}"
            ) from exc
        except rex.RedisError as exc:
            raise StoreError(f"{what} on {self.location}: {exc}") from exc

    async def _cmd(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any, retry: bool = True) -> Any:
        """``call(redis, *args)`` through ``_guard`` (a read unless ``retry=False``): redis-py is loosely typed."""
        r = self._redis()
        return await self._guard(lambda: call(r, *args), what, retry=retry)

    async def _script(
        self, name: str, keys: Sequence[bytes], args: Sequence[Any], what: str, *, retry: bool = False
    ) -> Any:
        self._redis()
        script = self._scripts[name]
        reply = await self._guard(lambda: script(keys=list(keys), args=list(args)), what, retry=retry)
        if isinstance(reply, list) and reply and reply[0] == b"lost":
            raise StoreError(
                f"the castate store at {self.location} has lost its data (its marker key is gone): "
                "Redis restarted without persistence, or the keys were flushed"
            )
        return reply

    # -- blobs ----------------------------------------------------------------------------------

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        r = self._redis()

        async def run() -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for i in range(0, len(wanted), PAGE):
                pipe.mget([self._bkey(n) for n in wanted[i : i + PAGE]])
            return await pipe.execute()

        pages = await self._guard(run, "get_blobs", retry=True)
        values = [v for page in pages for v in page]
        return {n: v for n, v in zip(wanted, values, strict=True) if v is not None}

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        if not ranges:
            return []
        for name, offset, length in ranges:
            if offset < 0 or length < 0:
                raise ValueError(f"bad range ({name!r}, {offset}, {length})")
        names = list(dict.fromkeys(name for name, _, _ in ranges))
        r = self._redis()

        async def run() -> list[Any]:
            # MULTI/EXEC: still one round trip, and no delete can fall between a blob's EXISTS
            # and its GETRANGE (GETRANGE alone answers "" for a missing key too).
            pipe = r.pipeline(transaction=True)
            for name in names:
                pipe.exists(self._bkey(name))
            for name, offset, length in ranges:
                if length:  # GETRANGE's end is inclusive, and -1 would mean "to the end"
                    pipe.getrange(self._bkey(name), offset, offset + length - 1)
            return await pipe.execute()

        replies = await self._guard(run, "get_ranges", retry=True)
        present = {name for name, n in zip(names, replies, strict=False) if n}
        chunks = iter(replies[len(names) :])
        out: list[bytes | None] = []
        for name, _, length in ranges:
            chunk = bytes(next(chunks)) if length else b""  # consumed for missing blobs too
            out.append(chunk if name in present else None)
        return out

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        reply = await self._script(
            "list_blobs", [self.k_store, self.k_blobs, self.k_blobsize], [prefix], "list_blobs", retry=True
        )
        flat = reply[1:]
        infos = [
            BlobInfo(flat[i].decode(), int(flat[i + 2]), int(float(flat[i + 1])) * 1000) for i in range(0, len(flat), 3)
        ]
        infos.sort(key=lambda info: info.name)
        return infos

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store blobs in script calls of up to PAGE names and PUT_BYTES bytes; waits while gc runs."""
        unique = self._unique_blobs(items)
        written = 0
        page: list[tuple[str, bytes]] = []
        size = 0
        for name, data in unique.items():
            if page and (len(page) >= PAGE or size + len(data) > PUT_BYTES):
                written += await self._write(page, (), {}, "", gc="check", what="put_blobs")
                page, size = [], 0
            page.append((name, data))
            size += len(data)
        if page:
            written += await self._write(page, (), {}, "", gc="check", what="put_blobs")
        return written

    @staticmethod
    def _unique_blobs(items: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
        unique: dict[str, bytes] = {}
        for name, data in items:
            check_blob_name(name)
            unique.setdefault(name, bytes(data))  # the first of a repeated name wins, as SET NX would
        return unique

    async def delete_blobs(self, names: Collection[str]) -> int:
        gone = 0
        wanted = list(dict.fromkeys(names))
        token = self._gc_token.get()
        for i in range(0, len(wanted), PAGE):
            part = wanted[i : i + PAGE]
            keys = [self.k_gc, self.k_blobs, self.k_blobsize, self.k_blobbytes, *(self._bkey(n) for n in part)]
            reply = await self._script("delete", keys, [token, *part], "delete_blobs")
            if reply[0] == b"gclost":
                raise StoreError(f"delete_blobs: gc's lock on {self.location} lapsed (lease expired); gc must stop")
            gone += int(reply[1])
        return gone

    # -- refs -----------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        wanted = list(names)
        if not wanted:
            return {}
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), PAGE):
            part = wanted[i : i + PAGE]
            reply = await self._script("get", [self.k_store, self.k_refs], part, "get_refs", retry=True)
            out.update((n, v) for n, v in zip(part, reply[1], strict=True) if v is not None)
        return out

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        reply = await self._script(
            "list", [self.k_store, self.k_refs, self.k_refnames], [prefix], "list_refs", retry=True
        )
        flat = reply[1:]
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2) if flat[i + 1] is not None}

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        if updates:
            await self._write((), updates, {}, message, gc="skip", what="update_refs")

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        """One script call: blobs (SET NX), then checks and expectations, then refs and reflog.

        A commit with blobs or checks (a save) waits, up to ``lock_timeout``, while gc holds
        its lock, unless this task is gc itself or holds ``gc_shared``. A bare ref move (no
        blobs, no checks: ``update_refs``, a checkpoint) does not wait, as before: it points at
        commits that refs reach already, which gc keeps."""
        unique = self._unique_blobs(blobs)
        checks = checks or {}
        if not unique and not updates and not checks:
            return 0
        gc: Literal["check", "skip"] = "check" if unique or checks else "skip"
        return await self._write(unique, updates, checks, message, gc=gc, what="commit")

    async def _write(
        self,
        blobs: Sequence[tuple[str, bytes]] | Mapping[str, bytes],
        updates: Sequence[RefUpdate],
        checks: Mapping[str, bytes | None],
        message: str,
        *,
        gc: Literal["check", "skip"],
        what: str,
    ) -> int:
        unique = dict(blobs)
        names = list(unique)
        keys = [
            self.k_store,
            self.k_gc,
            self.k_gcshared,
            self.k_blobs,
            self.k_blobsize,
            self.k_blobbytes,
            self.k_refs,
            self.k_refnames,
            self.k_reflog,
            self._request_key(),
            *(self._bkey(n) for n in names),
        ]
        args: list[Any] = [
            gc,
            self._gc_token.get(),
            self._shared_token.get(),
            len(names),
            len(checks),
            len(updates),
            message,
            *names,
            *unique.values(),
        ]
        for name, want in checks.items():
            check_ref_name(name)
            args += [name, "absent", b""] if want is None else [name, "value", bytes(want)]
        for u in updates:
            check_ref_name(u.name)
            mode, exp = _mode(u.expected)
            args += [u.name, mode, exp, "del" if u.new is None else "set", b"" if u.new is None else bytes(u.new)]
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.002
        while True:
            reply = await self._script("commit", keys, args, what, retry=True)
            if reply[0] != b"gc":
                break
            if time.monotonic() > deadline:
                raise StoreError(f"{what}: timed out after {self.lock_timeout:.0f}s waiting for gc on {self.location}")
            await asyncio.sleep(delay)  # gc is deleting: the script refused before changing anything
            delay = min(delay * 2, 0.1)
        if reply[0] == b"conflict":
            raise self._conflict(reply)
        return int(reply[1])

    @staticmethod
    def _conflict(reply: list[Any]) -> ConflictError:
        ref = reply[1].decode()
        have = reply[2].hex()[:12] if reply[2] else "absent"
        return ConflictError(f"ref {ref} is {have}, not what this writer expected: another writer moved it", ref)

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        """Read ``source`` and move ``target`` in one script (a ref move: no wait for gc)."""
        check_ref_name(target)
        mode, exp = _mode(expected)
        reply = await self._script(
            "copy",
            [self.k_store, self.k_refs, self.k_refnames, self.k_reflog, self._request_key()],
            [source, message, target, mode, exp, "set", b""],
            "copy_ref",
            retry=True,
        )
        if reply[0] == b"missing":
            raise NotFoundError(f"no ref {source}")
        if reply[0] == b"conflict":
            raise self._conflict(reply)
        return bytes(reply[1])

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        out: list[ReflogEntry] = []
        start = "-"
        want = None if name is None else name.encode()
        while True:
            page = await self._cmd("reflog", lambda r, s: r.xrange(self.k_reflog, s, "+", count=PAGE), start)
            for _, f in page:
                if want is None or f[b"n"] == want:
                    out.append(ReflogEntry(f[b"n"].decode(), f.get(b"o"), f.get(b"w"), int(f[b"t"]), f[b"m"].decode()))
            if len(page) < PAGE:
                return out
            start = "(" + page[-1][0].decode()

    async def expire_reflog(self, before_ns: int) -> int:
        dropped = 0
        while True:
            n = int(await self._script("expire", [self.k_reflog], [str(before_ns), EXPIRE_BATCH], "expire_reflog"))
            dropped += n
            if n < EXPIRE_BATCH:
                return dropped

    # -- maintenance ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        """Take the gc lock (a token with a lease, renewed in the background) while gc deletes.

        Writes from the holding task (and tasks it starts) carry the token and proceed; every
        other commit, in this process or another, waits until the lock is released."""
        self._redis()
        if self._gc_held:
            raise StoreError(f"gc_exclusive is already held by this backend on {self.location}")
        self._gc_held = True
        try:
            token = os.urandom(16).hex()
            lease_ms = int(self.gc_lease * 1000)
            deadline = time.monotonic() + self.lock_timeout
            while not await self._cmd(
                "gc_exclusive", lambda r: r.set(self.k_gc, token, nx=True, px=lease_ms), retry=False
            ):
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"timed out after {self.lock_timeout:.0f}s waiting for another gc on {self.location}"
                    )
                await asyncio.sleep(0.05)
            renew = asyncio.create_task(self._renew(token, lease_ms))
            ctx = self._gc_token.set(token)
            try:
                # No new shared holder can join now (the join script sees the lock): wait for the rest.
                while int(await self._script("shared_count", [self.k_gcshared], [], "gc_exclusive")):
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"timed out after {self.lock_timeout:.0f}s waiting for imports on {self.location}"
                        )
                    await asyncio.sleep(0.05)
                yield
            finally:
                with contextlib.suppress(ValueError):  # exited in another context: nothing to undo there
                    self._gc_token.reset(ctx)
                renew.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renew
                with contextlib.suppress(BackendUnavailableError, StoreError):  # the lease ends it anyway
                    await self._script("lease", [self.k_gc], [token, ""], "gc_exclusive")
        finally:
            self._gc_held = False

    async def _renew(self, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.gc_lease / 3)
            with contextlib.suppress(BackendUnavailableError, StoreError):
                if not await self._script("lease", [self.k_gc], [token, lease_ms], "gc_exclusive"):
                    return  # lost: deletes carrying the token will now be refused

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """Join the shared side of the gc lock (a token with a lease in <p>gcshared) while an import runs.

        The holding task's commits carry the token, so they proceed even once gc has taken
        its lock and waits for this holder to leave."""
        token = os.urandom(16).hex()
        lease_ms = int(self.gc_lease * 1000)
        deadline = time.monotonic() + self.lock_timeout
        while not int(await self._script("shared_join", [self.k_gc, self.k_gcshared], [token, lease_ms], "gc_shared")):
            if time.monotonic() > deadline:
                raise StoreError(f"timed out after {self.lock_timeout:.0f}s waiting for gc on {self.location}")
            await asyncio.sleep(0.05)
        renew = asyncio.create_task(self._renew_shared(token, lease_ms))
        ctx = self._shared_token.set(token)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                self._shared_token.reset(ctx)
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(BackendUnavailableError, StoreError):  # the lease ends it anyway
                await self._cmd("gc_shared", lambda r: r.zrem(self.k_gcshared, token), retry=False)

    async def _renew_shared(self, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.gc_lease / 3)
            with contextlib.suppress(BackendUnavailableError, StoreError):
                await self._script("shared_renew", [self.k_gcshared], [token, lease_ms], "gc_shared")

    async def now_ns(self) -> int:
        seconds, micros = await self._cmd("now_ns", lambda r: r.time())
        return int(seconds) * 1_000_000_000 + int(micros) * 1000

    async def stats(self) -> dict[str, int]:
        """Counts and sizes in one pipeline.

        ``store_bytes`` is what the store's data takes in the server's memory: the blob and
        version-1 frame payloads (counted exactly by the scripts), plus MEMORY USAGE (every
        element sampled) of the keys that index them and of refs, refnames, reflog and the
        marker. It leaves out the per-key overhead of each blob's own key (some 50-100 bytes
        a blob) and the allocator's fragmentation; ``server_used_memory`` is the whole server's.
        """
        r = self._redis()
        structural = [
            self.k_store,
            self.k_blobs,
            self.k_blobsize,
            self.k_blobbytes,
            self.k_refs,
            self.k_refnames,
            self.k_reflog,
            self.k_objects,
            self.k_bytes,
        ]

        async def run() -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(self.k_blobs)
            pipe.get(self.k_blobbytes)
            pipe.hlen(self.k_refs)
            pipe.xlen(self.k_reflog)
            pipe.zcard(self.k_objects)
            pipe.get(self.k_bytes)
            pipe.info("memory")
            for key in structural:
                pipe.memory_usage(key, samples=0)
            return await pipe.execute(raise_on_error=False)

        replies = await self._guard(run, "stats", retry=True)
        blobs, blob_bytes, refs, log, legacy, legacy_bytes, memory = replies[:7]
        for reply in replies[:6]:
            if isinstance(reply, Exception):
                raise StoreError(f"stats on {self.location}: {reply}")
        # MEMORY USAGE may be refused (ACLs of managed Redis): those keys then count nothing.
        overhead = sum(int(n) for n in replies[7:] if isinstance(n, int))
        out = {
            "blobs": int(blobs),
            "blob_bytes": int(blob_bytes or 0),
            "refs": int(refs),
            "reflog_entries": int(log),
            "store_bytes": int(blob_bytes or 0) + int(legacy_bytes or 0) + overhead,
        }
        if isinstance(memory, dict):
            out["server_used_memory"] = int(memory.get("used_memory", 0))
        if legacy:
            out["legacy_objects"] = int(legacy)
            out["legacy_bytes"] = int(legacy_bytes or 0)
        return out

    # -- format-1 stores -----------------------------------------------------------------------

    async def legacy_objects(self) -> int:
        return int(await self._cmd("legacy_objects", lambda r: r.zcard(self.k_objects)))

    async def iter_legacy_frames(self, batch: int = 1000) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """The version-1 objects by rank in ``<p>objects``, ``batch`` at a time (ZRANGE, then MGET).

        Ranks are stable because nothing adds version-1 objects to an upgraded store; an id
        whose key is gone is skipped."""
        start = 0
        while True:
            ids: list[bytes] = await self._cmd(
                "iter_legacy_frames", lambda r, s: r.zrange(self.k_objects, s, s + batch - 1), start
            )
            if not ids:
                return
            keys = [self._okey(oid) for oid in ids]
            frames: list[bytes | None] = await self._cmd("iter_legacy_frames", lambda r, k: r.mget(k), keys)
            found = [(bytes(oid), bytes(f)) for oid, f in zip(ids, frames, strict=True) if f is not None]
            if found:
                yield found
            if len(ids) < batch:
                return
            start += batch

    async def drop_legacy(self) -> None:
        """Delete the ``o:`` keys listed in ``<p>objects`` (a script per PAGE ids), then ``objects`` and ``bytes``."""
        while True:
            ids: list[bytes] = await self._cmd("drop_legacy", lambda r: r.zrange(self.k_objects, 0, PAGE - 1))
            if not ids:
                break
            keys = [self.k_objects, self.k_bytes, *(self._okey(oid) for oid in ids)]
            await self._script("drop_legacy", keys, ids, "drop_legacy", retry=True)
        await self._cmd("drop_legacy", lambda r: r.delete(self.k_objects, self.k_bytes))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


__all__ = ["STORE_VERSION", "RedisBackend", "split_url"]
