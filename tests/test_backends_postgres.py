"""The PostgreSQL blob backend over a real server: the blob suite, the object-level suite over
the pack store, migrations (format-1 stores included), and gc and ref locking."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from castate.backends import Backend, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresBackend, split_url
from castate.codec.objects import decode_frame
from castate.errors import BackendUnavailableError, ConflictError, StoreError, UnsupportedFormatError
from castate.repository.packs import PackStore
from castate.repository.packs.upgrade import upgrade_store
from castate.testing import PersistentBlobBackendTests, blob, payload, value
from tests.backend_conformance import PersistentBackendConformance, cid, obj


class TestPostgres(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _url(self, postgres_url: str) -> None:
        self.url = postgres_url

    async def make_backend(self) -> BlobBackend:
        return PostgresBackend(self.url)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return PostgresBackend(self.url)


class TestPostgresPackStore(PersistentBackendConformance):
    """The object-level contract, as the repository sees a PostgreSQL store: packs over blobs."""

    @pytest.fixture(autouse=True)
    def _url(self, postgres_url: str) -> None:
        self.url = postgres_url

    async def make_backend(self) -> Backend:
        return PackStore(PostgresBackend(self.url))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        kwargs: dict[str, Any] = dict(options)  # lock_timeout, timeout
        return PackStore(PostgresBackend(self.url, **kwargs))


# -- helpers ------------------------------------------------------------------------------------


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(split_url(url)[0], autocommit=True)


async def _tables(url: str) -> set[str]:
    schema = split_url(url)[1]
    async with await _connect(url) as conn:
        rows = await (
            await conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        ).fetchall()
    return {r[0] for r in rows}


async def _make_format_1_store(url: str, objects: list[tuple[bytes, bytes]], *, quarantined: int = 0) -> None:
    """A store as castate wrote it before format 2: migration 1 only, its objects saved through
    migration 1's own ``commit`` function (which also moved ``sessions/v1``)."""
    schema = split_url(url)[1]
    async with await _connect(url) as conn, conn.transaction():
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.schema_version (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        description, sql = MIGRATIONS[0]
        await conn.execute(sql.replace("{s}", schema).encode())
        await conn.execute(f"INSERT INTO {schema}.schema_version (version, description) VALUES (1, %s)", (description,))
        await conn.execute(f"INSERT INTO {schema}.meta VALUES ('castate', 'store'), ('id', 'v1store')")
        await conn.execute(
            f"SELECT {schema}.commit(%s::bytea[], %s::bytea[], %s::text[], %s::text[], %s::bytea[], %s::bytea[], "
            "%s, NULL)",
            (
                [i for i, _ in objects],
                [f for _, f in objects],
                ["sessions/v1"],
                ["absent"],
                [None],
                [cid(1)],
                "v1 save",
            ),
        )
        for n in range(quarantined):
            await conn.execute(
                f"INSERT INTO {schema}.quarantine VALUES (%s, %s, 1, 2)", (cid(100 + n), b"damaged frame")
            )


# -- schema and migrations ------------------------------------------------------------------------


async def test_migrations_are_recorded_and_a_newer_schema_is_refused(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    await b.close()
    schema = split_url(postgres_url)[1]
    async with await _connect(postgres_url) as conn:
        rows = await (await conn.execute(f"SELECT version FROM {schema}.schema_version ORDER BY version")).fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        await conn.execute(
            f"INSERT INTO {schema}.schema_version (version, description) VALUES (%s, 'future')", (SCHEMA_VERSION + 1,)
        )
    with pytest.raises(UnsupportedFormatError, match="upgrade castate"):
        await PostgresBackend(postgres_url).open()


async def test_a_new_store_has_only_format_2_tables(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        assert await _tables(postgres_url) == {"schema_version", "meta", "blobs", "refs", "reflog"}
        schema = split_url(postgres_url)[1]
        async with await _connect(postgres_url) as conn:
            row = await (
                await conn.execute(
                    "SELECT a.attstorage FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = 'data'",
                    (f"{schema}.blobs",),
                )
            ).fetchone()
        assert row == ("e",)  # EXTERNAL: packs come compressed, and ranges read only their chunks
        assert await b.legacy_objects() == 0
    finally:
        await b.close()


async def test_concurrent_first_opens_create_the_schema_once(postgres_url: str) -> None:
    backends = [PostgresBackend(postgres_url) for _ in range(4)]
    await asyncio.gather(*(b.open() for b in backends))
    assert len({b.store_id for b in backends}) == 1
    for b in backends:
        await b.close()


async def test_refuses_a_foreign_schema(postgres_url: str) -> None:
    schema = split_url(postgres_url)[1]
    async with await _connect(postgres_url) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.mine (x int)")
    with pytest.raises(StoreError, match="not a castate store"):
        await PostgresBackend(postgres_url).open()


def test_urls_and_messages_hide_the_password() -> None:
    b = PostgresBackend("postgresql://user:s3cret@db.example:5433/app?schema=team_a&sslmode=disable")
    assert b.schema == "team_a"
    assert "s3cret" not in b.location
    assert b.location == "postgresql://user:***@db.example:5433/app?sslmode=disable (schema team_a)"
    assert split_url("postgresql://h/db?schema=x&application_name=y") == ("postgresql://h/db?application_name=y", "x")
    with pytest.raises(ValueError, match="schema"):
        PostgresBackend("postgresql://h/db?schema=Bad-Name")


# -- format-1 stores ------------------------------------------------------------------------------


async def test_a_format_1_store_opens_keeps_its_objects_and_drops_them(postgres_url: str) -> None:
    objects = [obj("first v1 object"), obj("second v1 object")]
    await _make_format_1_store(postgres_url, objects, quarantined=1)
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        assert b.store_id == "v1store"
        assert {"objects", "quarantine", "blobs"} <= await _tables(postgres_url)
        assert await b.legacy_objects() == 2
        batches = [batch async for batch in b.iter_legacy_frames()]
        assert batches == [sorted(objects)]
        assert [batch async for batch in b.iter_legacy_frames(batch=1)] == [[o] for o in sorted(objects)]
        # refs and reflog of format 1 go on working; blobs are written beside the old objects
        assert await b.get_ref("sessions/v1") == cid(1)
        assert [(e.old, e.new, e.message) for e in await b.reflog()] == [(None, cid(1), "v1 save")]
        assert await b.commit([blob(b"pack")], [RefUpdate("sessions/v1", cid(2), cid(1))], message="v2 save") == 1
        stats = await b.stats()
        assert (stats["blobs"], stats["refs"], stats["reflog_entries"]) == (1, 1, 2)

        await b.drop_legacy()
        assert await b.legacy_objects() == 0
        assert [batch async for batch in b.iter_legacy_frames()] == []
        # the quarantine held damaged frames fsck set aside: it stays
        assert "objects" not in await _tables(postgres_url)
        assert "quarantine" in await _tables(postgres_url)
        assert await b.get_ref("sessions/v1") == cid(2)
        assert await b.get_blobs([blob(b"pack")[0]]) == dict([blob(b"pack")])
        await b.drop_legacy()  # again: nothing left to drop
    finally:
        await b.close()


async def test_castate_upgrade_moves_format_1_objects_into_packs(postgres_url: str) -> None:
    objects = [obj(f"upgraded object {i}" * (i + 1)) for i in range(5)]
    damaged = (cid(50), b"not the frame of this id")
    await _make_format_1_store(postgres_url, [*objects, damaged])
    with pytest.raises(UnsupportedFormatError, match="castate --store URL upgrade"):
        await PackStore(PostgresBackend(postgres_url)).open()
    report = await upgrade_store(PostgresBackend(postgres_url))
    assert (report.legacy, report.packed, report.damaged) == (6, 5, [damaged[0].hex()])
    store = PackStore(PostgresBackend(postgres_url))
    await store.open()
    try:
        got = await store.get_objects([oid for oid, _ in objects])
        assert {oid: decode_frame(oid, f) for oid, f in got.items()} == {
            oid: decode_frame(oid, f) for oid, f in objects
        }
        assert await store.get_ref("sessions/v1") == cid(1)
        assert await store.blobs.get_blobs(["quarantine/" + damaged[0].hex()]) == {
            "quarantine/" + damaged[0].hex(): damaged[1]
        }
        assert await store.blobs.legacy_objects() == 0
    finally:
        await store.close()


async def test_a_format_1_writer_still_running_is_stopped(postgres_url: str) -> None:
    """After the migration, format 1's save function refuses, with a message saying why, so an
    old process cannot add objects that format 2 does not read (nor `castate upgrade` copy)."""
    await _make_format_1_store(postgres_url, [obj("old")])
    b = PostgresBackend(postgres_url)
    await b.open()
    await b.close()
    schema = split_url(postgres_url)[1]
    async with await _connect(postgres_url) as conn:
        with pytest.raises(psycopg.Error, match="upgraded to castate storage format 2") as caught:
            await conn.execute(
                f"SELECT {schema}.commit(%s::bytea[], %s::bytea[], %s::text[], %s::text[], %s::bytea[], "
                "%s::bytea[], 'late', NULL)",
                ([obj("late")[0]], [obj("late")[1]], [], [], [], []),
            )
        assert caught.value.sqlstate == "CAS03"
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        assert await b.legacy_objects() == 1
    finally:
        await b.close()


async def test_a_format_1_store_without_objects_loses_its_empty_tables(postgres_url: str) -> None:
    await _make_format_1_store(postgres_url, [])
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        assert await _tables(postgres_url) == {"schema_version", "meta", "blobs", "refs", "reflog"}
        assert await b.legacy_objects() == 0
        assert await b.get_ref("sessions/v1") == cid(1)
    finally:
        await b.close()


async def test_legacy_frames_come_in_pages_in_id_order(postgres_url: str) -> None:
    objects = [obj(f"v1 object {i}") for i in range(7)]
    await _make_format_1_store(postgres_url, objects)
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        assert await b.legacy_objects() == 7
        pages = [batch async for batch in b.iter_legacy_frames(batch=3)]
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [item for page in pages for item in page] == sorted(objects)
        assert [batch async for batch in b.iter_legacy_frames(batch=7)] == [sorted(objects)]
        with pytest.raises(ValueError, match="batch"):
            [batch async for batch in b.iter_legacy_frames(batch=0)]
    finally:
        await b.close()


# -- commit: one statement, one transaction ---------------------------------------------------------


async def test_commit_is_one_call_of_the_server_function(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    schema = split_url(postgres_url)[1]
    try:
        async with await _connect(postgres_url) as conn:
            row = await (
                await conn.execute(
                    "SELECT p.pronargs FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = %s AND p.proname = 'commit_blobs'",
                    (schema,),
                )
            ).fetchone()
            assert row == (10,)
            # without the function the adapter cannot save at all: it does not write rows itself
            await conn.execute(f"ALTER FUNCTION {schema}.commit_blobs RENAME TO commit_blobs_away")
            try:
                with pytest.raises(StoreError, match="commit_blobs"):
                    await b.commit([blob(b"x")], [RefUpdate("sessions/a", cid(1), None)])
            finally:
                await conn.execute(f"ALTER FUNCTION {schema}.commit_blobs_away RENAME TO commit_blobs")
        assert await b.list_blobs() == []
        assert await b.commit([blob(b"x")], [RefUpdate("sessions/a", cid(1), None)]) == 1
    finally:
        await b.close()


async def test_a_failed_check_stores_no_blob(postgres_url: str) -> None:
    """Blobs, checks and ref moves are one transaction: a conflict rolls the blobs back too."""
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        await b.update_refs([RefUpdate("sessions/a", cid(1), None)])
        with pytest.raises(ConflictError) as caught:
            await b.commit([blob(b"lost")], [RefUpdate("sessions/b", cid(2), None)], checks={"sessions/a": cid(9)})
        assert caught.value.ref == "sessions/a"
        with pytest.raises(ConflictError) as caught:
            await b.commit([blob(b"lost")], [RefUpdate("sessions/a", cid(2), cid(9))])
        assert caught.value.ref == "sessions/a"
        assert await b.list_blobs() == []
    finally:
        await b.close()


async def test_a_check_waits_for_a_ref_move_in_flight(postgres_url: str) -> None:
    """A check reads the ref under a lock: a move (or a creation) another transaction has made
    but not committed yet is waited for, then seen, never read past."""
    b = PostgresBackend(postgres_url)
    await b.open()
    schema = split_url(postgres_url)[1]
    try:
        await b.update_refs([RefUpdate("sessions/a", cid(1), None)])
        for ref, old in (("sessions/a", cid(1)), ("sessions/new", None)):
            async with await psycopg.AsyncConnection.connect(split_url(postgres_url)[0]) as conn:  # a writer, paused
                await conn.execute(
                    f"SELECT {schema}.move_ref(%s, 'any', NULL, %s, {schema}.now_ns(), 'other')", (ref, cid(2))
                )
                save = asyncio.create_task(
                    b.commit([blob(ref.encode())], [RefUpdate("sessions/c", cid(3), None)], checks={ref: old})
                )
                await asyncio.sleep(0.3)
                assert not save.done()
                await conn.commit()
                with pytest.raises(ConflictError) as caught:
                    await asyncio.wait_for(save, 10)
                assert caught.value.ref == ref
            assert await b.get_ref(ref) == cid(2)
            assert await b.get_ref("sessions/c") is None
    finally:
        await b.close()


async def test_a_ref_move_waits_for_a_check_in_flight(postgres_url: str) -> None:
    """And the other way round: a ref a commit has checked stays as checked until it commits."""
    b = PostgresBackend(postgres_url)
    await b.open()
    schema = split_url(postgres_url)[1]
    try:
        await b.update_refs([RefUpdate("sessions/a", cid(1), None)])
        for ref, now in (("sessions/a", cid(1)), ("sessions/new", None)):
            async with await psycopg.AsyncConnection.connect(split_url(postgres_url)[0]) as conn:  # a save, paused
                await conn.execute(
                    f"SELECT {schema}.commit_blobs('{{}}', '{{}}', %s::text[], %s::bytea[], "
                    "'{}', '{}', '{}', '{}', '', NULL)",
                    ([ref], [now]),
                )
                move = asyncio.create_task(b.update_refs([RefUpdate(ref, cid(5))], message="move"))
                await asyncio.sleep(0.3)
                assert not move.done()
                await conn.commit()
                await asyncio.wait_for(move, 10)
            assert await b.get_ref(ref) == cid(5)
    finally:
        await b.close()


async def test_racing_creators_of_one_ref(postgres_url: str) -> None:
    """Many backend objects create the same new ref at once: exactly one wins, the others conflict."""
    backends = [PostgresBackend(postgres_url) for _ in range(6)]
    await asyncio.gather(*(b.open() for b in backends))
    try:
        results = await asyncio.gather(
            *(
                b.commit([blob(payload(i))], [RefUpdate("sessions/race", cid(i), None)], checks={"castate/epoch": None})
                for i, b in enumerate(backends)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        assert wins == [1]
        assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException)), results
        assert len(await backends[0].reflog("sessions/race")) == 1
    finally:
        for b in backends:
            await b.close()


async def test_ranges_past_int4_positions(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        await b.put_blobs([("packs/r", b"0123456789")])
        got = await b.get_ranges([("packs/r", 2**40, 5), ("packs/r", 3, 2**40), ("packs/r", 2**31 - 1, 2**31)])
        assert got == [b"", b"3456789", b""]
        with pytest.raises(ValueError, match="range"):
            await b.get_ranges([("packs/r", -1, 5)])
    finally:
        await b.close()


# -- gc locking -------------------------------------------------------------------------------------


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


async def test_ref_moves_alone_do_not_wait_for_gc(postgres_url: str) -> None:
    b, writer = PostgresBackend(postgres_url), PostgresBackend(postgres_url)
    await b.open()
    await writer.open()
    try:
        async with b.gc_exclusive():
            await asyncio.wait_for(writer.update_refs([RefUpdate("checkpoints/c", cid(1), None)]), 10)
            await asyncio.wait_for(writer.commit((), [RefUpdate("checkpoints/d", cid(2), None)]), 10)
            await asyncio.wait_for(writer.copy_ref("checkpoints/d", "checkpoints/e"), 10)
            # gc moves refs itself while it holds the lock (the pack store's epoch)
            await asyncio.wait_for(b.commit((), [RefUpdate("castate/epoch", cid(3))]), 10)
            # a commit with a check is a save: it waits
            save = asyncio.create_task(writer.commit((), [], checks={"castate/epoch": cid(3)}))
            await asyncio.sleep(0.3)
            assert not save.done()
        assert await asyncio.wait_for(save, 10) == 0
        assert await writer.list_refs("checkpoints/") == {
            "checkpoints/c": cid(1),
            "checkpoints/d": cid(2),
            "checkpoints/e": cid(2),
        }
    finally:
        await writer.close()
        await b.close()


async def test_a_save_gives_up_waiting_for_gc_clearly(postgres_url: str) -> None:
    b, writer = PostgresBackend(postgres_url), PostgresBackend(postgres_url, lock_timeout=0.3)
    await b.open()
    await writer.open()
    try:
        async with b.gc_exclusive():
            with pytest.raises(StoreError, match=r"timed out .*waiting for gc"):
                await writer.commit([blob(b"late")], [RefUpdate("sessions/l", cid(1), None)])
        assert await writer.get_ref("sessions/l") is None
        assert await writer.list_blobs() == []
        assert await writer.commit([blob(b"late")], [RefUpdate("sessions/l", cid(1), None)]) == 1
    finally:
        await writer.close()
        await b.close()


async def test_deletes_under_gc_fail_once_its_lock_connection_is_gone(postgres_url: str) -> None:
    """gc's deletes go through the connection that holds its lock: when that connection dies the
    lock goes with it, and a delete must fail rather than run while saves may be in flight."""
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        await b.put_blobs([blob(b"doomed"), blob(b"kept")])
        async with b.gc_exclusive():
            assert await b.delete_blobs([blob(b"doomed")[0]]) == 1
            assert b._gc_conn is not None
            pid = b._gc_conn.info.backend_pid
            async with await _connect(postgres_url) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(BackendUnavailableError, match="under the gc lock"):
                await b.delete_blobs([blob(b"kept")[0]])
            with pytest.raises(BackendUnavailableError, match="under the gc lock"):
                await b.expire_reflog(await b.now_ns())
        assert [i.name for i in await b.list_blobs()] == [blob(b"kept")[0]]
        async with b.gc_exclusive():  # and the next gc gets a new connection
            assert await b.delete_blobs([blob(b"kept")[0]]) == 1
    finally:
        await b.close()


# -- space ------------------------------------------------------------------------------------------


async def test_reclaim_lets_the_space_of_deleted_blobs_be_reused(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        empty = (await b.stats())["store_bytes"]
        first = [blob(payload(i, 1 << 20)) for i in range(4)]
        await b.commit(first, [RefUpdate("sessions/s", cid(1), None)])
        full = (await b.stats())["store_bytes"]
        assert full - empty >= 4 << 20  # pg_total_relation_size counts the TOAST table
        assert await b.delete_blobs([n for n, _ in first]) == 4
        await b.reclaim()
        await b.commit([blob(payload(100 + i, 1 << 20)) for i in range(4)], [RefUpdate("sessions/s", cid(2), cid(1))])
        stats = await b.stats()
        assert stats["blob_bytes"] == 4 << 20
        # the second 4 MiB went where the first were: without the vacuum the tables would hold both
        assert stats["store_bytes"] < full + (2 << 20)
    finally:
        await b.close()


async def test_reclaim_gives_the_space_of_deleted_blobs_back(postgres_url: str) -> None:
    """After gc deleted most of the blobs, the tables shrink (VACUUM FULL of a small table with
    much free space), where a plain vacuum only lets the space be reused."""
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        empty = (await b.stats())["store_bytes"]
        doomed = [blob(payload(i, 1 << 20)) for i in range(4)]
        kept = blob(payload(99, 5000))
        await b.commit(doomed, [RefUpdate("sessions/s", cid(1), None)])
        await b.put_blobs([kept])  # after them in the files: a plain vacuum cannot cut them off the end
        assert (await b.stats())["store_bytes"] - empty >= 4 << 20
        assert await b.delete_blobs([n for n, _ in doomed]) == 4
        await b.reclaim()
        assert (await b.stats())["store_bytes"] < empty + (1 << 20)
        assert await b.get_blobs([kept[0]]) == {kept[0]: kept[1]}
        assert await b.get_refs(["sessions/s"]) == {"sessions/s": cid(1)}
    finally:
        await b.close()


async def test_reclaim_does_not_wait_long_for_readers_to_compact(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader holding the blobs table keeps VACUUM FULL out: reclaim gives up on it after
    COMPACT_LOCK_WAIT, without an error, and the store is as it was."""
    monkeypatch.setattr("castate.backends.postgres.COMPACT_LOCK_WAIT", 0.2)
    schema = split_url(postgres_url)[1]
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        doomed = [blob(payload(i, 1 << 20)) for i in range(3)]
        kept = blob(payload(99, 5000))
        await b.commit(doomed, [RefUpdate("sessions/s", cid(1), None)])
        await b.put_blobs([kept])  # after them in the files: a plain vacuum cannot cut them off the end
        await b.delete_blobs([n for n, _ in doomed])
        async with await _connect(postgres_url) as reader, reader.transaction():
            await reader.execute(f"SELECT count(*) FROM {schema}.blobs")  # holds ACCESS SHARE until the end
            before = (await b.stats())["store_bytes"]
            await asyncio.wait_for(b.reclaim(), 30)
            assert (await b.stats())["store_bytes"] >= before - (64 << 10)  # not compacted
        assert await b.get_blobs([kept[0]]) == {kept[0]: kept[1]}
        await b.reclaim()  # the reader is gone: now it compacts
        assert (await b.stats())["store_bytes"] < before - (2 << 20)
    finally:
        await b.close()


async def test_stats(postgres_url: str) -> None:
    b = PostgresBackend(postgres_url)
    await b.open()
    try:
        await b.commit([blob(b"one"), blob(b"three")], [RefUpdate("sessions/a", value(1), None)])
        await b.update_refs([RefUpdate("sessions/a", value(2), value(1))])
        stats = await b.stats()
        assert {k: stats[k] for k in ("blobs", "blob_bytes", "refs", "reflog_entries")} == {
            "blobs": 2,
            "blob_bytes": 8,
            "refs": 1,
            "reflog_entries": 2,
        }
        assert stats["store_bytes"] > 0
    finally:
        await b.close()
