"""The Redis blob backend over a real server: the blob suite, the object-level suite over a
pack store, the gc lock, version-1 stores, and persistence on and off."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from castate.backends import Backend, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.redis import STORE_VERSION, RedisBackend
from castate.errors import ConflictError, StoreError, UnsupportedFormatError
from castate.repository.packs import PackStore
from castate.testing import PersistentBlobBackendTests, blob, payload, value
from tests.backend_conformance import PersistentBackendConformance, obj
from tools.servers import RedisServer


class TestRedisBlobs(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _url(self, redis_url: str) -> None:
        self.url = redis_url  # a fresh key prefix per test

    async def make_backend(self) -> BlobBackend:
        return RedisBackend(self.url)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return RedisBackend(self.url)


class TestRedisPackStore(PersistentBackendConformance):
    """The object-level contract, kept by the pack store on top of this backend."""

    @pytest.fixture(autouse=True)
    def _url(self, redis_url: str) -> None:
        self.url = redis_url

    async def make_backend(self) -> Backend:
        return PackStore(RedisBackend(self.url))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return PackStore(RedisBackend(self.url, **options))  # type: ignore[arg-type]


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    b = RedisBackend(redis_url)
    await b.open()
    yield b
    await b.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the test server, to look at and write keys directly."""
    r = aioredis.Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


async def _get(raw: aioredis.Redis, key: bytes) -> bytes:
    got = await raw.get(key)
    assert isinstance(got, bytes)
    return got


# -- the key layout --------------------------------------------------------------------------------


async def test_the_key_layout_of_a_new_store(backend: RedisBackend, raw: aioredis.Redis) -> None:
    p = backend.prefix.encode()
    data = payload(1, 300)
    name, _ = blob(data)
    assert await backend.commit([(name, data)], [RefUpdate("sessions/a", value(1), None)], message="m") == 1
    marker = orjson.loads(await _get(raw, p + b"store"))
    assert (marker["castate"], marker["version"]) == ("store", STORE_VERSION) == ("store", 2)
    assert await raw.get(p + b"b:" + name.encode()) == data
    micros = await raw.zscore(p + b"blobs", name)
    assert micros is not None
    assert [(i.name, i.size, i.time_ns) for i in await backend.list_blobs()] == [(name, 300, int(micros) * 1000)]
    assert await raw.hget(p + b"blobsize", name) == b"300"
    assert await raw.get(p + b"blobbytes") == b"300"
    assert await raw.hget(p + b"refs", "sessions/a") == value(1)
    assert await raw.zrange(p + b"refnames", 0, -1) == [b"sessions/a"]
    assert await raw.xlen(p + b"reflog") == 1
    # nothing of the version-1 layout or of its quarantine in a new store
    for old in (b"objects", b"bytes", b"quarantine"):
        assert not await raw.exists(p + old)
    assert await backend.delete_blobs([name]) == 1
    assert await raw.get(p + b"blobbytes") == b"0"
    assert not await raw.hexists(p + b"blobsize", name)
    assert await raw.zcard(p + b"blobs") == 0


async def test_stats_count_what_the_store_holds(backend: RedisBackend) -> None:
    await backend.commit([blob(payload(i, 10_000)) for i in range(3)], [RefUpdate("sessions/s", value(1), None)])
    stats = await backend.stats()
    assert (stats["blobs"], stats["blob_bytes"], stats["refs"], stats["reflog_entries"]) == (3, 30_000, 1, 1)
    # the payloads plus what Redis reports for the keys that index them, refs and reflog
    assert 30_000 < stats["store_bytes"] < stats["server_used_memory"]
    assert "legacy_objects" not in stats


async def test_a_resent_commit_is_applied_once(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the client resends after a dropped connection carries the same request key: the
    script answers the first reply again instead of conflicting with its own ref move."""
    request = backend.prefix.encode() + b"req:fixed"
    monkeypatch.setattr(backend, "_request_key", lambda: request)
    save = ([blob(b"once")], [RefUpdate("sessions/r", value(1), None)])
    assert await backend.commit(*save, message="once") == 1
    assert await backend.commit(*save, message="once") == 1  # the resend: same reply, nothing applied
    assert [e.message for e in await backend.reflog("sessions/r")] == ["once"]
    monkeypatch.undo()
    with pytest.raises(ConflictError):  # a new commit of the same thing is a new request
        await backend.commit(*save, message="again")


# -- the gc lock -----------------------------------------------------------------------------------


async def test_gc_deletes_are_refused_once_its_lease_lapsed(redis_url: str, raw: aioredis.Redis) -> None:
    b = RedisBackend(redis_url, gc_lease=0.3)
    await b.open()
    try:
        kept = blob(b"kept")
        await b.put_blobs([kept])
        async with b.gc_exclusive():
            await raw.delete(b.k_gc)  # as if the lease ran out while gc stalled
            with pytest.raises(StoreError, match="lapsed"):
                await b.delete_blobs([kept[0]])
        assert await b.get_blobs([kept[0]]) == dict([kept])
        assert await b.delete_blobs([kept[0]]) == 1  # outside gc (fsck), a delete carries no token
    finally:
        await b.close()


async def test_gc_writes_with_its_token_while_other_tasks_wait(backend: RedisBackend) -> None:
    """The gc token travels with gc's task (and the tasks it starts), not with the backend
    object: a save from another task of the same process waits for gc like any other writer."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def collect() -> None:
        async with backend.gc_exclusive():
            # gc's own writes (a repacked chain, the epoch ref) go through
            assert await backend.put_blobs([blob(b"repacked")]) == 1
            await backend.commit((), [RefUpdate("castate/epoch", value(9))], checks={"sessions/w": None})
            helper = asyncio.create_task(backend.commit([blob(b"helper")], ()))
            assert await asyncio.wait_for(helper, 60) == 1
            entered.set()
            await release.wait()

    gc = asyncio.create_task(collect())
    await entered.wait()
    save = asyncio.create_task(backend.commit([blob(b"save")], [RefUpdate("sessions/w", value(1), None)]))
    await asyncio.sleep(0.3)
    assert not save.done()
    assert await backend.get_ref("sessions/w") is None
    release.set()
    await asyncio.wait_for(gc, 60)
    assert await asyncio.wait_for(save, 60) == 1
    assert await backend.get_ref("sessions/w") == value(1)
    assert await backend.get_ref("castate/epoch") == value(9)


async def test_bare_ref_moves_do_not_wait_for_gc_but_saves_do(redis_url: str, backend: RedisBackend) -> None:
    writer = RedisBackend(redis_url, lock_timeout=0.3)
    await writer.open()
    try:
        await writer.update_refs([RefUpdate("sessions/a", value(1), None)])
        async with backend.gc_exclusive():
            # a checkpoint is a ref move: gc keeps what refs reach, so it need not wait
            await asyncio.wait_for(writer.update_refs([RefUpdate("checkpoints/a", value(1), None)]), 5)
            await asyncio.wait_for(writer.commit((), [RefUpdate("checkpoints/b", value(1), None)]), 5)
            await asyncio.wait_for(writer.copy_ref("sessions/a", "checkpoints/c"), 5)
            # blobs or checks make it a save: it waits, and gives up clearly, having changed nothing
            with pytest.raises(StoreError, match=r"timed out .*waiting for gc"):
                await writer.commit([blob(b"late")], [RefUpdate("sessions/b", value(2), None)])
            with pytest.raises(StoreError, match=r"timed out .*waiting for gc"):
                await writer.commit((), [RefUpdate("sessions/c", value(2), None)], checks={"sessions/a": value(1)})
            with pytest.raises(StoreError, match=r"timed out .*waiting for gc"):
                await writer.put_blobs([blob(b"late")])
        assert await writer.get_refs(["sessions/b", "sessions/c"]) == {}
        assert await writer.get_blobs([blob(b"late")[0]]) == {}
        assert set(await writer.list_refs("checkpoints/")) == {"checkpoints/a", "checkpoints/b", "checkpoints/c"}
    finally:
        await writer.close()


async def test_a_gc_shared_holder_saves_while_gc_waits_for_it(redis_url: str, backend: RedisBackend) -> None:
    importer = RedisBackend(redis_url)
    await importer.open()
    try:
        entered = asyncio.Event()

        async def collect() -> None:
            async with backend.gc_exclusive():
                entered.set()

        async with importer.gc_shared():
            gc = asyncio.create_task(collect())
            while not await backend._redis().exists(backend.k_gc):  # gc has its lock and waits for us
                await asyncio.sleep(0.01)
            # the import's saves still go through (they would deadlock with gc otherwise)...
            assert await importer.commit([blob(b"imported")], [RefUpdate("sessions/i", value(1), None)]) == 1
            # ...but not a save of a task that does not hold the shared side (one started
            # outside it, here: in a context of its own)
            other = asyncio.create_task(
                importer.commit([blob(b"other")], [RefUpdate("sessions/o", value(1), None)]),
                context=contextvars.Context(),
            )
            await asyncio.sleep(0.3)
            assert not entered.is_set()
            assert not other.done()
        await asyncio.wait_for(gc, 60)
        assert await asyncio.wait_for(other, 60) == 1
        assert await backend.get_refs(["sessions/i", "sessions/o"]) == {"sessions/i": value(1), "sessions/o": value(1)}
    finally:
        await importer.close()


# -- versions --------------------------------------------------------------------------------------


async def test_a_version_1_store_opens_and_its_objects_can_be_dropped(redis_url: str, raw: aioredis.Redis) -> None:
    prefix = redis_url.split("?prefix=")[1].encode()
    items = [obj("first v1 object"), obj("second v1 object")]
    marker = {"castate": "store", "version": 1, "id": "v1store", "created_ns": 1}
    await raw.set(prefix + b"store", orjson.dumps(marker))
    for i, (oid, frame) in enumerate(items):
        await raw.set(prefix + b"o:" + oid.hex().encode(), frame)
        await raw.zadd(prefix + b"objects", {oid: 1_700_000_000_000_000 + i})
    await raw.set(prefix + b"bytes", sum(len(f) for _, f in items))
    await raw.hset(prefix + b"refs", "sessions/v1", items[0][0])
    await raw.zadd(prefix + b"refnames", {"sessions/v1": 0})
    await raw.xadd(prefix + b"reflog", {"n": "sessions/v1", "w": items[0][0], "t": "1000", "m": "v1 save"})

    b = RedisBackend(redis_url)
    await b.open()
    try:
        assert b.store_id == "v1store"
        bumped = orjson.loads(await _get(raw, prefix + b"store"))
        assert (bumped["version"], bumped["id"], bumped["upgraded_from"]) == (2, "v1store", 1)
        # refs and reflog work as before; the objects stay until drop_legacy
        assert await b.get_ref("sessions/v1") == items[0][0]
        assert [e.message for e in await b.reflog("sessions/v1")] == ["v1 save"]
        assert await b.legacy_objects() == 2
        assert (await b.stats())["legacy_objects"] == 2
        batches = [batch async for batch in b.iter_legacy_frames(batch=1)]
        assert [len(batch) for batch in batches] == [1, 1]
        assert sorted(pair for batch in batches for pair in batch) == sorted(items)
        assert [pair async for batch in b.iter_legacy_frames() for pair in batch] == items
        # new writes use the version-2 layout beside the old keys
        await b.commit([blob(b"v2 pack")], [RefUpdate("sessions/v1", value(2), items[0][0])], message="v2 save")
        await b.drop_legacy()
        assert await b.legacy_objects() == 0
        assert [batch async for batch in b.iter_legacy_frames()] == []
        for oid, _ in items:
            assert not await raw.exists(prefix + b"o:" + oid.hex().encode())
        assert not await raw.exists(prefix + b"objects", prefix + b"bytes")
        assert await b.get_ref("sessions/v1") == value(2)
        assert await b.get_blobs([blob(b"v2 pack")[0]]) == dict([blob(b"v2 pack")])
        assert [e.message for e in await b.reflog("sessions/v1")] == ["v1 save", "v2 save"]
    finally:
        await b.close()
    again = RedisBackend(redis_url)  # the upgraded store opens as a version-2 one
    await again.open()
    try:
        assert await again.legacy_objects() == 0
        assert await again.get_ref("sessions/v1") == value(2)
    finally:
        await again.close()


async def test_a_newer_store_version_is_refused(redis_url: str, raw: aioredis.Redis) -> None:
    prefix = redis_url.split("?prefix=")[1].encode()
    await raw.set(prefix + b"store", orjson.dumps({"castate": "store", "version": STORE_VERSION + 1, "id": "x"}))
    with pytest.raises(UnsupportedFormatError, match="upgrade castate"):
        await RedisBackend(redis_url).open()


async def test_a_key_that_is_no_marker_is_refused(redis_url: str, raw: aioredis.Redis) -> None:
    prefix = redis_url.split("?prefix=")[1].encode()
    await raw.set(prefix + b"store", b"someone else's value")
    with pytest.raises(StoreError, match="not a castate store marker"):
        await RedisBackend(redis_url).open()


# -- the server ------------------------------------------------------------------------------------


async def test_refuses_an_evicting_server(redis_url: str, raw: aioredis.Redis) -> None:
    await raw.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(StoreError, match="noeviction"):
            await RedisBackend(redis_url).open()
    finally:
        await raw.config_set("maxmemory-policy", "noeviction")


async def test_restart_without_persistence_is_reported_not_silent() -> None:
    with RedisServer(persistence="none") as server:
        b = RedisBackend(server.url, timeout=5)
        await b.open()
        try:
            await b.commit([blob(b"v")], [RefUpdate("sessions/a", value(1), None)])
            server.stop()
            server.start()
            with pytest.raises(StoreError, match="lost its data"):
                await b.get_ref("sessions/a")
            with pytest.raises(StoreError, match="lost its data"):
                await b.commit([blob(b"w")], [RefUpdate("sessions/a", value(2), None)])
            with pytest.raises(StoreError, match="lost its data"):
                await b.list_blobs()
            assert await b.get_blobs([blob(b"w")[0]]) == {}  # the refused commit wrote nothing
        finally:
            await b.close()
        with pytest.raises(StoreError, match="no castate store"):
            await RedisBackend(server.url, create=False).open()


async def test_restart_with_aof_keeps_everything() -> None:
    with RedisServer(persistence="aof-always") as server:
        b = RedisBackend(server.url, timeout=5)
        await b.open()
        try:
            items = [blob(payload(i, 1000)) for i in range(5)]
            await b.commit(items, [RefUpdate("sessions/a", value(1), None)], message="saved")
            infos = await b.list_blobs()
            server.stop(kill=True)  # a crash: only what was fsynced to the AOF survives
            server.start()
            assert await b.get_ref("sessions/a") == value(1)  # the same backend object reconnects
            assert await b.get_blobs([n for n, _ in items]) == dict(items)
            assert await b.list_blobs() == infos
            assert [e.message for e in await b.reflog("sessions/a")] == ["saved"]
            with pytest.raises(ConflictError):
                await b.commit([blob(b"stale")], [RefUpdate("sessions/a", value(2), None)])
        finally:
            await b.close()


async def test_castate_upgrade_moves_a_version_1_store_into_packs(redis_url: str, raw: aioredis.Redis) -> None:
    """A version-1 store as castate 1 wrote it (one compressed frame per key) is refused by the
    pack store until `castate upgrade` has packed its objects; then its sessions read back."""
    import time

    import castate
    from castate.codec import Commit, encode_commit, object_id
    from castate.codec.encoder import Encoder
    from castate.codec.objects import KIND_COMMIT, encode_frame
    from castate.repository.packs.upgrade import upgrade_store

    state = {"messages": [{"i": i, "text": f"message {i} " * 20} for i in range(300)], "doc": "d" * 5000}
    enc = Encoder()
    root, _ = enc.encode_root(state, None)
    content = encode_commit(Commit(root, (), "s", time.time_ns(), None, {}))
    objects = {**enc.objects, object_id(KIND_COMMIT, content): (KIND_COMMIT, content)}
    prefix = redis_url.split("?prefix=")[1].encode()
    await raw.set(prefix + b"store", orjson.dumps({"castate": "store", "version": 1, "id": "v1", "created_ns": 1}))
    for oid, (kind, data) in objects.items():
        await raw.set(prefix + b"o:" + oid.hex().encode(), encode_frame(kind, data))
        await raw.zadd(prefix + b"objects", {oid: 1_700_000_000_000_000})
    await raw.hset(prefix + b"refs", "sessions/s", object_id(KIND_COMMIT, content))
    await raw.zadd(prefix + b"refnames", {"sessions/s": 0})

    with pytest.raises(UnsupportedFormatError, match="upgrade"):
        await castate.Repository(RedisBackend(redis_url)).open()
    report = await upgrade_store(RedisBackend(redis_url))
    assert (report.legacy, report.damaged) == (len(objects), [])
    async with castate.StateManager(redis_url) as sm:
        assert await sm.load_session("s") == state
        assert (await sm.fsck()).ok
