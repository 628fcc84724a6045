"""The SQLite backend passes the conformance suite, and refuses files that are not its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from castate.backends import Backend
from castate.backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from castate.errors import StoreError, UnsupportedFormatError
from tests.backend_conformance import PersistentBackendConformance


class TestSQLite(PersistentBackendConformance):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    async def make_backend(self) -> Backend:
        return SQLiteBackend(self.path)

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return SQLiteBackend(self.path, **options)


class TestSQLiteRelaxed(TestSQLite):
    async def make_backend(self) -> Backend:
        return SQLiteBackend(self.path, durability="relaxed")


async def test_refuses_a_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (x)")
    with pytest.raises(StoreError, match="not a castate store"):
        await SQLiteBackend(path).open()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 1  # left as it was


async def test_refuses_a_newer_schema_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    b = SQLiteBackend(path)
    await b.open()
    await b.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(UnsupportedFormatError, match="upgrade castate"):
        await SQLiteBackend(path).open()
    with pytest.raises(StoreError, match="no castate store"):
        await SQLiteBackend(tmp_path / "missing.db", create=False).open()


async def test_calls_before_open_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not open"):
        await SQLiteBackend(tmp_path / "s.db").get_refs(["sessions/a"])
