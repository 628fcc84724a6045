"""The SQLite blob backend: the blob suite, the object suite over PackStore, and its own file's behaviour.

The format-1 fixture (tests/fixtures/v1/store.sqlite, made by castate 271f407 with
make_sqlite_fixture.py) checks that a store written by the old backend opens, keeps its refs
and hands its object rows to ``castate upgrade``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from castate.backends import Backend
from castate.backends.base import RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.sqlite import PAGE_SIZE, SCHEMA_VERSION, SQLiteBackend
from castate.codec.objects import decode_frame
from castate.errors import StoreError, UnsupportedFormatError
from castate.testing import PersistentBlobBackendTests
from tests.backend_conformance import PersistentBackendConformance

FIXTURE = Path(__file__).parent / "fixtures" / "v1"
SUFFIXES = ("", "-wal", "-shm")


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def pragma(path: Path, name: str) -> Any:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def file_bytes(path: Path) -> int:
    """The database's size on disk as the file system sees it: the file and its WAL."""
    return sum(os.stat(f"{path}{s}").st_size for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


# -- the blob contract ------------------------------------------------------------------------------


class TestSQLiteBlobs(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    async def make_backend(self) -> BlobBackend:
        return SQLiteBackend(self.path)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return SQLiteBackend(self.path)


class TestSQLiteBlobsRelaxed(TestSQLiteBlobs):
    async def make_backend(self) -> BlobBackend:
        return SQLiteBackend(self.path, durability="relaxed")

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return SQLiteBackend(self.path, durability="relaxed")


# -- the object contract, through the pack store ----------------------------------------------------


class TestSQLitePacks(PersistentBackendConformance):
    """The old object-level suite over PackStore(SQLiteBackend): the format above, this file below."""

    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    async def make_backend(self) -> Backend:
        from castate.repository.packs import PackStore

        return PackStore(SQLiteBackend(self.path))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        from castate.repository.packs import PackStore

        return PackStore(SQLiteBackend(self.path, **options))  # type: ignore[arg-type]


# -- the file ------------------------------------------------------------------------------------------


async def test_a_new_file_is_private_incremental_and_has_no_object_tables(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    b = SQLiteBackend(path)
    await b.open()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await b.legacy_objects() == 0
        assert [frames async for frames in b.iter_legacy_frames()] == []
        await b.drop_legacy()  # nothing to drop: a no-op
        await b.commit([("packs/" + "a" * 64, b"pack")], [RefUpdate("sessions/s", b"\x01" * 32, None)])
    finally:
        await b.close()
    assert pragma(path, "auto_vacuum") == 2  # INCREMENTAL
    assert pragma(path, "page_size") == PAGE_SIZE == 1024
    assert pragma(path, "user_version") == SCHEMA_VERSION == 2
    assert pragma(path, "journal_mode") == "wal"
    assert tables(path) == {"castate_meta", "blobs", "refs", "reflog", "sqlite_sequence"}
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600


@pytest.mark.parametrize(("durability", "synchronous"), [("durable", 2), ("relaxed", 1)])
async def test_durability_chooses_how_sqlite_syncs(tmp_path: Path, durability: Any, synchronous: int) -> None:
    b = SQLiteBackend(tmp_path / "s.db", durability=durability)
    await b.open()
    try:
        assert b._conn is not None
        assert b._conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous  # 2 FULL, 1 NORMAL
    finally:
        await b.close()
    with pytest.raises(ValueError, match="durability"):
        SQLiteBackend(tmp_path / "s.db", durability="eventually")  # type: ignore[arg-type]


async def test_concurrent_first_opens_of_one_new_file_all_succeed(tmp_path: Path) -> None:
    """Openers racing to create one store all get it (SQLite refuses a racing WAL switch at once).

    A race: without the retry this fails most runs, not every run; with it, never."""
    for round_ in range(40):
        path = tmp_path / f"race-{round_}.db"
        backends = [SQLiteBackend(path) for _ in range(8)]
        try:
            await asyncio.gather(*(b.open() for b in backends))
            assert len({b.store_id for b in backends}) == 1
        finally:
            for b in backends:
                await b.close()
        assert pragma(path, "auto_vacuum") == 2
        assert pragma(path, "journal_mode") == "wal"


async def test_refuses_a_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE mine (x)")
        conn.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a castate store"):
        await SQLiteBackend(path).open()
    assert path.read_bytes() == before  # left exactly as it was: not even switched to WAL
    assert not os.path.exists(f"{path}-wal")


async def test_refuses_a_foreign_database_that_claims_a_version(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE mine (x)")
        conn.execute("PRAGMA user_version=1")
        conn.commit()
    with pytest.raises(StoreError, match="not a castate store"):
        await SQLiteBackend(path).open()
    assert tables(path) == {"mine"}  # no blobs table added to someone else's file


async def test_refuses_a_newer_schema_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    b = SQLiteBackend(path)
    await b.open()
    await b.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(UnsupportedFormatError, match="upgrade castate"):
        await SQLiteBackend(path).open()
    with pytest.raises(StoreError, match="no castate store"):
        await SQLiteBackend(tmp_path / "missing.db", create=False).open()
    assert not (tmp_path / "missing.db").exists()


async def test_calls_before_open_fail_clearly(tmp_path: Path) -> None:
    b = SQLiteBackend(tmp_path / "s.db")
    with pytest.raises(StoreError, match="not open"):
        await b.get_refs(["sessions/a"])
    with pytest.raises(StoreError, match="not open"):
        await b.get_blobs(["packs/a"])
    with pytest.raises(StoreError, match="not open"):
        await b.commit([("packs/a", b"x")], [])
    with pytest.raises(StoreError, match="not open"):
        await b.legacy_objects()
    assert not (tmp_path / "s.db").exists()


async def test_stats_count_blobs_refs_and_the_files(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    b = SQLiteBackend(path)
    await b.open()
    try:
        await b.commit(
            [("packs/a", b"x" * 1000), ("packs/b", b"y" * 24)],
            [RefUpdate("sessions/a", b"\x01" * 32, None), RefUpdate("sessions/b", b"\x02" * 32, None)],
        )
        await b.update_refs([RefUpdate("sessions/b", None, b"\x02" * 32)])
        stats = await b.stats()
        on_disk = sum(os.stat(f"{path}{s}").st_size for s in SUFFIXES if os.path.exists(f"{path}{s}"))
    finally:
        await b.close()
    assert stats["blobs"] == 2
    assert stats["blob_bytes"] == 1024
    assert stats["refs"] == 1
    assert stats["reflog_entries"] == 3
    assert stats["bytes_apparent"] == on_disk
    assert stats["bytes_allocated"] > 0


async def test_reclaim_gives_a_deleted_blob_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    big = os.urandom(4 << 20)  # incompressible, and SQLite does not compress anyway
    b = SQLiteBackend(path)
    await b.open()
    try:
        await b.put_blobs([("packs/big", big), ("packs/small", b"keep me")])
        before = file_bytes(path)
        assert before >= len(big)
        assert await b.delete_blobs(["packs/big"]) == 1
        await b.reclaim()
        after = file_bytes(path)
        assert before - after >= len(big) // 2
        assert await b.get_blobs(["packs/small"]) == {"packs/small": b"keep me"}
    finally:
        await b.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_file_with_4_kib_pages_keeps_them_and_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files made before new stores used 1 KiB pages (SQLite's default 4 KiB) open, read, write
    and reclaim as they are: the page size of a WAL file is fixed once it has a page."""
    path = tmp_path / "old.db"
    monkeypatch.setattr("castate.backends.sqlite.PAGE_SIZE", 4096)  # what the code before wrote
    b = SQLiteBackend(path)
    await b.open()
    try:
        await b.commit([("packs/" + "a" * 64, b"old pack" * 1000)], [RefUpdate("sessions/s", b"\x01" * 32, None)])
    finally:
        await b.close()
    assert pragma(path, "page_size") == 4096
    monkeypatch.undo()
    b = SQLiteBackend(path)
    await b.open()
    try:
        assert await b.get_blobs(["packs/" + "a" * 64]) == {"packs/" + "a" * 64: b"old pack" * 1000}
        await b.commit([("packs/" + "b" * 64, b"new pack")], [RefUpdate("sessions/s", b"\x02" * 32, b"\x01" * 32)])
        assert await b.delete_blobs(["packs/" + "a" * 64]) == 1
        await b.reclaim()
        assert await b.get_refs(["sessions/s"]) == {"sessions/s": b"\x02" * 32}
        assert await b.get_blobs(["packs/" + "b" * 64]) == {"packs/" + "b" * 64: b"new pack"}
    finally:
        await b.close()
    assert pragma(path, "page_size") == 4096
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_ranges_of_a_large_blob(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    b = SQLiteBackend(tmp_path / "s.db")
    await b.open()
    try:
        await b.put_blobs([("packs/big", data)])
        got = await b.get_ranges(
            [("packs/big", 0, 10), ("packs/big", 2 << 20, 4096), ("packs/big", len(data) - 5, 100), ("packs/no", 0, 1)]
        )
        assert got == [data[:10], data[2 << 20 : (2 << 20) + 4096], data[-5:], None]
        with pytest.raises(ValueError, match="bad blob range"):
            await b.get_ranges([("packs/big", -1, 10)])
    finally:
        await b.close()


# -- format-1 files -------------------------------------------------------------------------------


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    """A private copy of the format-1 fixture (opening it migrates the schema)."""
    path = tmp_path / "v1.sqlite"
    shutil.copyfile(FIXTURE / "store.sqlite", path)
    return path


@pytest.fixture
def v1_expected() -> dict[str, Any]:
    return json.loads((FIXTURE / "store-sqlite-expected.json").read_text())


async def test_the_v1_fixture_is_what_it_claims(v1_store: Path, v1_expected: dict[str, Any]) -> None:
    assert v1_expected["format"] == 1
    assert pragma(v1_store, "user_version") == v1_expected["user_version"] == 1
    assert {"objects", "quarantine"} <= tables(v1_store)
    assert v1_store.stat().st_size < 300_000


async def test_a_v1_file_opens_migrated_with_its_refs_and_objects(v1_store: Path, v1_expected: dict[str, Any]) -> None:
    b = SQLiteBackend(v1_store)
    await b.open()
    try:
        refs = await b.list_refs()
        checkpoint = "checkpoints/" + v1_expected["checkpoints"]["fixture-session"]["id"]
        assert set(refs) == {"sessions/fixture-session", "sessions/other", checkpoint}
        assert await b.get_ref(checkpoint) == refs[checkpoint]
        assert [e.message for e in await b.reflog("sessions/other")] == ["save other"]
        assert len(await b.reflog()) == 5  # 3 saves of fixture-session, its checkpoint, 1 save of other

        rows = v1_expected["object_rows"]
        assert await b.legacy_objects() == rows
        batches = [batch async for batch in b.iter_legacy_frames(batch=4)]
        assert [len(x) for x in batches] == [4] * (rows // 4) + ([rows % 4] if rows % 4 else [])
        frames = [pair for batch in batches for pair in batch]
        ids = [oid for oid, _ in frames]
        assert ids == sorted(ids)
        assert len(set(ids)) == rows
        for oid, frame in frames:
            decode_frame(oid, frame)  # each frame intact under its id
        assert set(refs.values()) <= set(ids)  # the commits the refs name are among them

        # The migrated file is a working v2 store: blobs and ref moves go in beside the old rows.
        pack = "packs/" + "c" * 64
        assert await b.commit([(pack, b"new pack")], [RefUpdate("sessions/new", ids[0], None)]) == 1
        assert await b.get_blobs([pack]) == {pack: b"new pack"}
    finally:
        await b.close()
    assert pragma(v1_store, "user_version") == SCHEMA_VERSION
    assert {"blobs", "objects", "quarantine", "refs", "reflog", "castate_meta"} <= tables(v1_store)

    again = SQLiteBackend(v1_store)  # a second open finds it migrated and leaves it
    await again.open()
    try:
        assert await again.legacy_objects() == rows
        assert await again.get_ref("sessions/new") == ids[0]
    finally:
        await again.close()


async def test_drop_legacy_removes_the_objects_and_keeps_refs(v1_store: Path, v1_expected: dict[str, Any]) -> None:
    b = SQLiteBackend(v1_store)
    await b.open()
    try:
        refs = await b.list_refs()
        await b.drop_legacy()
        assert await b.legacy_objects() == 0
        assert [x async for x in b.iter_legacy_frames()] == []
        assert await b.list_refs() == refs
        before = file_bytes(v1_store)
        await b.reclaim()  # a v1 file has no auto_vacuum: this VACUUMs it once
        assert file_bytes(v1_store) < before
        assert await b.list_refs() == refs
    finally:
        await b.close()
    assert "objects" not in tables(v1_store)
    assert "quarantine" not in tables(v1_store)  # it was empty
    assert pragma(v1_store, "auto_vacuum") == 2  # from now on reclaims are incremental


async def test_drop_legacy_keeps_quarantined_rows(v1_store: Path) -> None:
    with closing(sqlite3.connect(v1_store)) as conn:
        conn.execute("INSERT INTO quarantine VALUES (?, ?, 1, 2)", (b"\x07" * 32, b"damaged"))
        conn.commit()
    b = SQLiteBackend(v1_store)
    await b.open()
    try:
        await b.drop_legacy()
        assert await b.legacy_objects() == 0
    finally:
        await b.close()
    assert "objects" not in tables(v1_store)
    with closing(sqlite3.connect(v1_store)) as conn:
        assert conn.execute("SELECT id, data FROM quarantine").fetchall() == [(b"\x07" * 32, b"damaged")]
