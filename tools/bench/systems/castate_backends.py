"""castate over its other backends: SQLite, PostgreSQL, Redis and S3, with the same steps as ``castate``.

Each step is ``save_session`` then ``create_checkpoint`` through a ``StateManager`` opened on
a store URL. The PostgreSQL and Redis systems start a throwaway server on loopback
(``tools.servers``), durable like the local store: PostgreSQL with fsync on and
synchronous_commit on, Redis with ``appendonly yes`` and ``appendfsync always``.

Bytes: SQLite is measured like the local store (its files after close). For the servers,
the store's own share of the server is reported in place of a directory walk: PostgreSQL,
``pg_total_relation_size`` of the store's tables (heap, TOAST and indexes); Redis,
``used_memory_dataset`` (its keys in RAM). Both are taken just before close. S3 (a throwaway
SeaweedFS on loopback): the bytes of every object under the store's prefix (what S3 bills),
with the HTTP requests the backend sent in ``requests``.
"""

from __future__ import annotations

import atexit
from pathlib import Path

import castate
from tools.bench.systems.castate_sys import CastateSteps
from tools.servers import PostgresServer, RedisServer, SeaweedServer


class _Reopening(CastateSteps):
    """A system whose cold restores run on a new ``StateManager`` over the same store URL."""

    url = ""

    async def reopen(self) -> None:
        assert self.sm is not None
        await self.sm.close()
        self.sm = castate.StateManager(self.url)


class CastateSQLite(_Reopening):
    name = "castate-sqlite"

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.url = f"sqlite:///{directory / 'state.db'}"
        self.sm = castate.StateManager(self.url)


class _Server(_Reopening):
    """A system whose store lives in a server: ``disk()`` reports the store's share of it."""

    def __init__(self) -> None:
        super().__init__()
        self.measured: dict[str, int] = {}

    async def measure(self) -> dict[str, int]:  # pragma: no cover - overridden
        raise NotImplementedError

    async def close(self) -> None:
        if self.sm is not None:
            self.measured = await self.measure()
        await super().close()
        self.stop_server()

    def stop_server(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def disk(self) -> dict[str, int]:
        return dict(self.measured)


class CastatePostgres(_Server):
    name = "castate-postgres"

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        self.server = PostgresServer(durable=True)
        atexit.register(self.server.cleanup)  # also when the run fails before close()
        self.server.start()
        self.url = self.server.url
        self.sm = castate.StateManager(self.url)

    async def measure(self) -> dict[str, int]:
        assert self.sm is not None
        s = await self.sm.repository.backend.stats()
        size = s["store_bytes"]  # the schema's tables with their indexes and TOAST
        return {"files": 0, "bytes_apparent": size, "bytes_allocated": size}

    def stop_server(self) -> None:
        self.server.cleanup()


class CastateRedis(_Server):
    name = "castate-redis"

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        self.server = RedisServer(persistence="aof-always")
        atexit.register(self.server.cleanup)
        self.server.start()
        self.url = self.server.url
        self.sm = castate.StateManager(self.url)

    async def measure(self) -> dict[str, int]:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(self.server.url)
        try:
            info = await r.info("memory")
        finally:
            await r.aclose()
        used = int(info["used_memory_dataset"])
        return {"files": 0, "bytes_apparent": used, "bytes_allocated": used}

    def stop_server(self) -> None:
        self.server.cleanup()


class CastateS3(_Server):
    name = "castate-s3"

    async def setup(self, directory: Path) -> None:
        import os

        await super().setup(directory)
        self.server = SeaweedServer()
        atexit.register(self.server.cleanup)
        self.server.start()
        os.environ.update(self.server.env())  # the test credentials, for this process only
        self.server.create_bucket("castate-bench")
        self.url = self.server.url("castate-bench", "bench")
        self.sm = castate.StateManager(self.url)

    async def measure(self) -> dict[str, int]:
        assert self.sm is not None
        s = await self.sm.repository.backend.stats()
        size = s["store_bytes"]  # every object under the prefix: packs, index segments, refs, reflog
        return {"files": s["store_objects"], "bytes_apparent": size, "bytes_allocated": size}

    def stop_server(self) -> None:
        self.server.cleanup()
