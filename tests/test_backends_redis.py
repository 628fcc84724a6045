"""The Redis backend over a real server: conformance, the gc lock, persistence on and off."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from castate.backends import Backend, RefUpdate
from castate.backends.redis import RedisBackend
from castate.errors import StoreError
from tests.backend_conformance import PersistentBackendConformance, cid, obj
from tools.servers import RedisServer


class TestRedis(PersistentBackendConformance):
    @pytest.fixture(autouse=True)
    def _url(self, redis_url: str) -> None:
        self.url = redis_url

    async def make_backend(self) -> Backend:
        return RedisBackend(self.url)

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return RedisBackend(self.url, **options)


async def test_gc_deletes_are_refused_once_its_lease_lapsed(redis_url: str) -> None:
    b = RedisBackend(redis_url, gc_lease=0.3)
    await b.open()
    try:
        await b.put_objects([obj("kept")])
        async with b.gc_exclusive():
            raw = aioredis.Redis.from_url(redis_url.split("?")[0])
            await raw.delete(b.k_gc)  # as if the lease ran out while gc stalled
            await raw.aclose()
            with pytest.raises(StoreError, match="lapsed"):
                await b.delete_objects([obj("kept")[0]])
        assert await b.has_objects([obj("kept")[0]]) == {obj("kept")[0]}
    finally:
        await b.close()


async def test_refuses_an_evicting_server(redis_server: RedisServer, redis_url: str) -> None:
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(StoreError, match="noeviction"):
            await RedisBackend(redis_url).open()
    finally:
        await raw.config_set("maxmemory-policy", "noeviction")
        await raw.aclose()


async def test_restart_without_persistence_is_reported_not_silent() -> None:
    with RedisServer(persistence="none") as server:
        b = RedisBackend(server.url, timeout=5)
        await b.open()
        try:
            await b.commit([obj("v")], [RefUpdate("sessions/a", cid(1), None)])
            server.stop()
            server.start()
            with pytest.raises(StoreError, match="lost its data"):
                await b.get_ref("sessions/a")
            with pytest.raises(StoreError, match="lost its data"):
                await b.commit([obj("w")], [RefUpdate("sessions/a", cid(2), None)])
        finally:
            await b.close()
        with pytest.raises(StoreError, match="no castate store"):
            await RedisBackend(server.url, create=False).open()


async def test_restart_with_aof_keeps_everything() -> None:
    with RedisServer(persistence="aof-always") as server:
        b = RedisBackend(server.url, timeout=5)
        await b.open()
        try:
            items = [obj(f"p{i}") for i in range(5)]
            await b.commit(items, [RefUpdate("sessions/a", cid(1), None)], message="saved")
            server.stop(kill=True)  # a crash: only what was fsynced to the AOF survives
            server.start()
            assert await b.get_ref("sessions/a") == cid(1)  # the same backend object reconnects
            got = await b.get_objects([oid for oid, _ in items])
            assert {k: bytes(v) for k, v in got.items()} == dict(items)
            assert [e.message for e in await b.reflog("sessions/a")] == ["saved"]
        finally:
            await b.close()
