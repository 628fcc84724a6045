"""The PostgreSQL backend over a real server: conformance, migrations, gc locking."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from castate.backends import Backend, RefUpdate
from castate.backends.postgres import SCHEMA_VERSION, PostgresBackend, split_url
from castate.errors import StoreError, UnsupportedFormatError
from tests.backend_conformance import PersistentBackendConformance, cid, obj


class TestPostgres(PersistentBackendConformance):
    @pytest.fixture(autouse=True)
    def _url(self, postgres_url: str) -> None:
        self.url = postgres_url

    async def make_backend(self) -> Backend:
        return PostgresBackend(self.url)

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return PostgresBackend(self.url, **options)


def _schema_of(url: str) -> str:
    return split_url(url)[1]


async def test_migrations_are_recorded_and_a_newer_schema_is_refused(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    await b.close()
    conninfo, schema = split_url(postgres_url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        rows = await (await conn.execute(f"SELECT version FROM {schema}.schema_version")).fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        await conn.execute(
            f"INSERT INTO {schema}.schema_version (version, description) VALUES (%s, 'future')", (SCHEMA_VERSION + 1,)
        )
    with pytest.raises(UnsupportedFormatError, match="upgrade castate"):
        await PostgresBackend(postgres_url).open()


async def test_concurrent_first_opens_create_the_schema_once(postgres_url: str) -> None:
    backends = [PostgresBackend(postgres_url) for _ in range(4)]
    await asyncio.gather(*(b.open() for b in backends))
    assert len({b.store_id for b in backends}) == 1
    for b in backends:
        await b.close()


async def test_refuses_a_foreign_schema(postgres_url: str) -> None:
    conninfo, schema = split_url(postgres_url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.mine (x int)")
    with pytest.raises(StoreError, match="not a castate store"):
        await PostgresBackend(postgres_url).open()


async def test_gc_waits_for_a_save_in_flight(postgres_url: str) -> None:
    """A save's transaction holds the shared lock: gc's exclusive lock waits until it commits."""
    b = PostgresBackend(postgres_url)
    await b.open()
    conninfo = split_url(postgres_url)[0]
    try:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:  # a save, paused mid-transaction
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (b._gc_key,))
            entered = asyncio.Event()

            async def gc() -> None:
                async with b.gc_exclusive():
                    entered.set()

            task = asyncio.create_task(gc())
            await asyncio.sleep(0.3)
            assert not entered.is_set()
            await conn.commit()
            await asyncio.wait_for(task, 10)
            assert entered.is_set()
    finally:
        await b.close()


async def test_existing_objects_get_a_fresh_write_time(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        a = obj("fresh")
        await b.put_objects([a])
        first = {i.id: i.time_ns async for i in b.iter_objects()}[a[0]]
        await asyncio.sleep(0.01)
        assert await b.commit([a], [RefUpdate("sessions/f", cid(1), None)]) == 0
        second = {i.id: i.time_ns async for i in b.iter_objects()}[a[0]]
        assert second > first
    finally:
        await b.close()


async def test_racing_creators_of_one_ref(postgres_url: str) -> None:
    """Many writers create the same new ref at once: exactly one wins, the others conflict."""
    from castate.errors import ConflictError

    backends = [PostgresBackend(postgres_url) for _ in range(6)]
    await asyncio.gather(*(b.open() for b in backends))
    try:
        results = await asyncio.gather(
            *(b.commit([obj(f"r{i}")], [RefUpdate("sessions/race", cid(i), None)]) for i, b in enumerate(backends)),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        assert len(wins) == 1
        assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
        assert len(await backends[0].reflog("sessions/race")) == 1
    finally:
        for b in backends:
            await b.close()
