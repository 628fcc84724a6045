"""The Redis backend: a shared store in a Redis server (redis-py asyncio, Lua scripts).

Keys, under a prefix (``castate:`` unless the URL says ``?prefix=...``)::

    <p>store          marker: {"castate": "store", "version": 1, "id": ...}; its absence means data loss
    <p>o:<hex id>     one object frame (already zstd-compressed), written with SET NX
    <p>objects        sorted set: id -> write time (microseconds, the server's clock)
    <p>bytes          total bytes of the stored frames
    <p>refs           hash: ref name -> target
    <p>refnames       sorted set of ref names (score 0), for prefix listing
    <p>reflog         stream: one entry per ref change (n, o, w, t, m)
    <p>gc             gc lock: a random token with a lease (PX), renewed while gc runs
    <p>gcshared       sorted set: token -> lease end, one per holder of the shared side (imports)
    <p>req:<token>    a done save, kept a minute, so resending it after a lost reply is a no-op
    <p>q:<hex id>     a quarantined frame; <p>quarantine: id -> time it was quarantined

Every write is one Lua script, which Redis runs atomically: a save checks the marker and
the gc lock, writes the absent objects (``SET NX``), stamps every object's write time
(fresh times keep gc's grace period honest), checks every ref expectation, and only then
moves the refs and appends the reflog. A conflict changes nothing. While gc holds the
lock, saves are refused by the script and wait in the client; since a save is one
script, no save is ever between its dedup check and its ref move when gc takes the lock.
gc's deletes carry its token and are refused once its lease has lapsed.

Persistence is the server's business. Without it (no RDB, no AOF) a Redis restart empties
the store: the marker goes too, so every backend that was open raises StoreError on its
next ref operation instead of reporting sessions as missing; a new ``open`` starts an empty
store. With RDB snapshots a restart rolls back to the last snapshot, refs and objects
together (never a ref without its objects). With ``appendonly yes`` and
``appendfsync always`` a save that returned survives a crash. docs/backends.md has more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from castate.backends.base import Backend, ObjectInfo, ReflogEntry, RefUpdate, _Any, check_ref_name
from castate.backends.redis_scripts import (
    COMMIT,
    COPY_REF,
    DELETE,
    EXPIRE,
    GC_LEASE,
    GET_REFS,
    LIST_REFS,
    QUARANTINE,
    SHARED_COUNT,
    SHARED_JOIN,
    SHARED_RENEW,
)
from castate.errors import (
    BackendUnavailableError,
    ConflictError,
    NotFoundError,
    StoreError,
    UnsupportedFormatError,
)

T = TypeVar("T")
STORE_VERSION = 1
PAGE = 1000
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


class RedisBackend(Backend):
    """A castate store in a Redis database (``redis://host:6379/0``, ``rediss://``, ``unix://``).

    ``timeout`` bounds connecting and each command (seconds); ``lock_timeout`` bounds how
    long a save waits for gc and gc for the lock; ``gc_lease`` is how long the gc lock
    outlives a gc process that died (it is renewed while gc runs). ``create=False``
    refuses to start a new store where there is none (e.g. after a restart that lost data).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout: float = 30.0,
        lock_timeout: float = 60.0,
        gc_lease: float = 30.0,
        create: bool = True,
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
        self._gc_token = ""
        p = self.prefix.encode()
        self.k_store, self.k_gc, self.k_objects, self.k_bytes = p + b"store", p + b"gc", p + b"objects", p + b"bytes"
        self.k_gcshared = p + b"gcshared"
        self.k_refs, self.k_refnames, self.k_reflog = p + b"refs", p + b"refnames", p + b"reflog"
        self.k_quarantine = p + b"quarantine"
        self._scripts: dict[str, Any] = {}

    def _okey(self, oid: bytes) -> bytes:
        return self.prefix.encode() + b"o:" + oid.hex().encode()

    def _request_key(self) -> bytes:
        return self.prefix.encode() + b"req:" + uuid.uuid4().hex.encode()

    def _qkey(self, oid: bytes) -> bytes:
        return self.prefix.encode() + b"q:" + oid.hex().encode()

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
            ("delete", DELETE),
            ("quarantine", QUARANTINE),
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
                    "objects or its gc lock under memory pressure; set maxmemory-policy noeviction"
                )
        marker = {"castate": "store", "version": STORE_VERSION, "id": uuid.uuid4().hex, "created_ns": time.time_ns()}
        if self.create:
            await r.set(self.k_store, orjson.dumps(marker), nx=True)
        raw = await r.get(self.k_store)
        if raw is None:
            raise StoreError(f"no castate store at {self.location}")
        try:
            meta = orjson.loads(raw)
            version = meta["version"]
            if meta.get("castate") != "store" or type(version) is not int:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.location}: key {self.k_store.decode()} is not a castate store marker") from None
        if version > STORE_VERSION:
            raise UnsupportedFormatError(
                f"store {self.location} has format version {version}; this castate reads up to {STORE_VERSION} "
                "(upgrade castate)"
            )
        self.store_id = str(meta.get("id", ""))

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

    # -- objects --------------------------------------------------------------------------------

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        wanted = list(ids)
        if not wanted:
            return {}
        r = self._redis()

        async def run() -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for i in range(0, len(wanted), PAGE):
                pipe.mget([self._okey(oid) for oid in wanted[i : i + PAGE]])
            return await pipe.execute()

        pages = await self._guard(run, "get_objects", retry=True)
        values = [v for page in pages for v in page]
        return {oid: v for oid, v in zip(wanted, values, strict=True) if v is not None}

    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        wanted = list(ids)
        if not wanted:
            return set()
        r = self._redis()
        scores = await self._guard(lambda: r.zmscore(self.k_objects, wanted), "has_objects", retry=True)
        return {oid for oid, s in zip(wanted, scores, strict=True) if s is not None}

    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        if not items:
            return 0
        return await self._commit(items, [], "", gc=False, what="put_objects")

    async def delete_objects(self, ids: Collection[bytes]) -> int:
        gone = 0
        wanted = list(dict.fromkeys(ids))
        for i in range(0, len(wanted), PAGE):
            part = wanted[i : i + PAGE]
            keys = [self.k_store, self.k_gc, self.k_objects, self.k_bytes, *(self._okey(o) for o in part)]
            reply = await self._script("delete", keys, [self._gc_token, *part], "delete_objects")
            gone += self._maintenance_reply(reply, "delete_objects")
        return gone

    def _maintenance_reply(self, reply: list[Any], what: str) -> int:
        if reply[0] == b"gclost":
            raise StoreError(f"{what}: gc's lock on {self.location} lapsed (lease expired); gc must stop")
        return int(reply[1])

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """ZSCAN: every object present for the whole iteration is listed (once: repeats are dropped)."""
        r = self._redis()
        cursor = 0
        seen: set[bytes] = set()
        while True:
            cursor, page = await self._guard(
                lambda c=cursor: r.zscan(self.k_objects, c, count=PAGE, score_cast_func=int),
                "iter_objects",
                retry=True,
            )
            page = [(oid, us) for oid, us in page if oid not in seen]
            seen.update(oid for oid, _ in page)

            async def sizes_of(page: list[Any] = page) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                for oid, _ in page:
                    pipe.strlen(self._okey(oid))
                return await pipe.execute()

            sizes = await self._guard(sizes_of, "iter_objects", retry=True) if page else []
            for (oid, us), size in zip(page, sizes, strict=True):
                if size:
                    yield ObjectInfo(oid, int(size), int(us) * 1000)
            if cursor == 0:
                return

    # -- refs -----------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        wanted = list(names)
        if not wanted:
            return {}
        out: dict[str, bytes] = {}
        for i in range(0, len(wanted), PAGE):  # Lua's unpack() takes a few thousand values at most
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
            await self._commit([], updates, message, gc=False, what="update_refs")

    async def commit(
        self,
        items: Sequence[tuple[bytes, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        stream: str = "",
        history: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        return await self._commit([*items, *history], updates, message, gc=True, what="commit")

    @staticmethod
    def _ref_args(updates: Sequence[RefUpdate]) -> list[Any]:
        args: list[Any] = []
        for u in updates:
            check_ref_name(u.name)
            mode, exp = _mode(u.expected)
            args += [u.name, mode, exp, "del" if u.new is None else "set", b"" if u.new is None else bytes(u.new)]
        return args

    async def _commit(
        self, items: Sequence[tuple[bytes, bytes]], updates: Sequence[RefUpdate], message: str, *, gc: bool, what: str
    ) -> int:
        unique = dict(items)
        ids = list(unique)
        keys = [
            self.k_store,
            self.k_gc,
            self.k_objects,
            self.k_refs,
            self.k_refnames,
            self.k_reflog,
            self.k_bytes,
            self._request_key(),
            *(self._okey(o) for o in ids),
        ]
        args = ["1" if gc else "0", len(ids), len(updates), message, *ids, *(bytes(f) for f in unique.values())]
        args += self._ref_args(updates)
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

    async def copy_ref(self, source: str, target: str, *, expected: Any = None, message: str = "") -> bytes:
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
        r = self._redis()
        out: list[ReflogEntry] = []
        start = "-"
        want = None if name is None else name.encode()
        while True:
            page = await self._guard(
                lambda start=start: r.xrange(self.k_reflog, start, "+", count=PAGE), "reflog", retry=True
            )
            for _, f in page:
                if want is None or f[b"n"] == want:
                    out.append(ReflogEntry(f[b"n"].decode(), f.get(b"o"), f.get(b"w"), int(f[b"t"]), f[b"m"].decode()))
            if len(page) < PAGE:
                return out
            start = "(" + page[-1][0].decode()

    # -- maintenance ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        """Take the gc lock (a token with a lease, renewed in the background) while gc deletes."""
        r = self._redis()
        if self._gc_token:
            raise StoreError(f"gc_exclusive is already held by this backend on {self.location}")
        token = uuid.uuid4().hex
        lease_ms = int(self.gc_lease * 1000)
        deadline = time.monotonic() + self.lock_timeout
        while not await self._guard(lambda: r.set(self.k_gc, token, nx=True, px=lease_ms), "gc_exclusive"):
            if time.monotonic() > deadline:
                raise StoreError(f"timed out after {self.lock_timeout:.0f}s waiting for another gc on {self.location}")
            await asyncio.sleep(0.05)
        self._gc_token = token
        renew = asyncio.create_task(self._renew(token, lease_ms))
        try:
            # No new shared holder can join now (the join script sees the lock): wait for the rest.
            while int(await self._script("shared_count", [self.k_gcshared], [], "gc_exclusive")):
                if time.monotonic() > deadline:
                    raise StoreError(f"timed out after {self.lock_timeout:.0f}s waiting for imports on {self.location}")
                await asyncio.sleep(0.05)
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            self._gc_token = ""
            with contextlib.suppress(BackendUnavailableError, StoreError):  # the lease ends it anyway
                await self._script("lease", [self.k_gc], [token, ""], "gc_exclusive")

    async def now_ns(self) -> int:
        seconds, micros = await self._guard(lambda: self._redis().time(), "now_ns", retry=True)
        return int(seconds) * 1_000_000_000 + int(micros) * 1000

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """Join the shared side of the gc lock (a token with a lease in <p>gcshared) while an import runs."""
        token = uuid.uuid4().hex
        lease_ms = int(self.gc_lease * 1000)
        deadline = time.monotonic() + self.lock_timeout
        while not int(await self._script("shared_join", [self.k_gc, self.k_gcshared], [token, lease_ms], "gc_shared")):
            if time.monotonic() > deadline:
                raise StoreError(f"timed out after {self.lock_timeout:.0f}s waiting for gc on {self.location}")
            await asyncio.sleep(0.05)
        renew = asyncio.create_task(self._renew_shared(token, lease_ms))
        try:
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            with contextlib.suppress(BackendUnavailableError, StoreError):  # the lease ends it anyway
                await self._guard(lambda: self._redis().zrem(self.k_gcshared, token), "gc_shared")

    async def _renew_shared(self, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.gc_lease / 3)
            with contextlib.suppress(BackendUnavailableError, StoreError):
                await self._script("shared_renew", [self.k_gcshared], [token, lease_ms], "gc_shared")

    async def _renew(self, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(self.gc_lease / 3)
            with contextlib.suppress(BackendUnavailableError, StoreError):
                if not await self._script("lease", [self.k_gc], [token, lease_ms], "gc_exclusive"):
                    return  # lost: deletes carrying the token will now be refused

    async def expire_reflog(self, before_ns: int) -> int:
        dropped = 0
        while True:
            n = int(await self._script("expire", [self.k_reflog], [str(before_ns), EXPIRE_BATCH], "expire_reflog"))
            dropped += n
            if n < EXPIRE_BATCH:
                return dropped

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        moved = 0
        wanted = list(dict.fromkeys(ids))
        for i in range(0, len(wanted), PAGE):
            part = wanted[i : i + PAGE]
            keys = [self.k_store, self.k_gc, self.k_objects, self.k_bytes, self.k_quarantine]
            for oid in part:
                keys += [self._okey(oid), self._qkey(oid)]
            reply = await self._script("quarantine", keys, [self._gc_token, *part], "quarantine_objects")
            moved += self._maintenance_reply(reply, "quarantine_objects")
        return moved

    async def stats(self) -> dict[str, int]:
        r = self._redis()

        async def run() -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(self.k_objects)
            pipe.get(self.k_bytes)
            pipe.hlen(self.k_refs)
            pipe.xlen(self.k_reflog)
            pipe.zcard(self.k_quarantine)
            pipe.info("memory")
            return await pipe.execute()

        objects, size, refs, log, quarantined, memory = await self._guard(run, "stats", retry=True)
        return {
            "objects": int(objects),
            "object_bytes": int(size or 0),
            "refs": int(refs),
            "reflog_entries": int(log),
            "quarantined": int(quarantined),
            "server_used_memory": int(memory.get("used_memory", 0)),
        }


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
