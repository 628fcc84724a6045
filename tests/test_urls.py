"""Store URLs: castate.open, FileStorageBackend and StateManager pick the backend a URL names."""

from __future__ import annotations

from pathlib import Path

import pytest

import castate
from castate.backends.postgres import PostgresBackend
from castate.backends.redis import RedisBackend
from castate.backends.sqlite import SQLiteBackend
from castate.backends.urls import open_backend


def test_urls_pick_backends(tmp_path: Path) -> None:
    assert isinstance(castate.open(str(tmp_path)), castate.LocalBackend)
    assert isinstance(castate.open(tmp_path), castate.LocalBackend)
    local = castate.open(f"file://{tmp_path}/s")
    assert isinstance(local, castate.LocalBackend)
    assert local.root == tmp_path / "s"
    assert isinstance(castate.open("memory://"), castate.MemoryBackend)
    absolute = castate.open(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(absolute, SQLiteBackend)
    assert absolute.path == tmp_path / "s.db"
    relative = castate.open("sqlite:///state.db", durability="relaxed")
    assert isinstance(relative, SQLiteBackend)
    assert str(relative.path) == "state.db"
    assert not relative.durable
    pg = castate.open("postgresql://u:secret@db.example:5433/app?schema=team_a&sslmode=disable", timeout=3)
    assert isinstance(pg, PostgresBackend)
    assert (pg.schema, pg.timeout) == ("team_a", 3)
    assert pg.conninfo == "postgresql://u:secret@db.example:5433/app?sslmode=disable"
    assert "secret" not in pg.location
    assert isinstance(castate.open("postgres://h/db"), PostgresBackend)
    r = castate.open("redis://:pw@cache:6380/2?prefix=team_a:")
    assert isinstance(r, RedisBackend)
    assert (r.prefix, r.url) == ("team_a:", "redis://:pw@cache:6380/2")
    assert "pw" not in r.location


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown store URL scheme"):
        open_backend("mysql://h/db")
    with pytest.raises(ValueError, match="bad SQLite URL"):
        open_backend("sqlite://")
    with pytest.raises(ValueError, match="bad schema name"):
        open_backend("postgresql://h/db?schema=Robert'); DROP TABLE x")


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis", "s3"])
async def test_state_manager_over_a_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path}/s.db",
        "postgres": lambda: request.getfixturevalue("postgres_url"),
        "redis": lambda: request.getfixturevalue("redis_url"),
        "s3": lambda: request.getfixturevalue("s3_url"),
    }[kind]()
    state = {"messages": [{"role": "user", "content": "x" * 5000}], "step": 1, "blob": b"\x00\xff"}
    async with castate.StateManager(url) as sm:
        await sm.save_session("s/1", state)
        cp = await sm.create_checkpoint("s/1", "before")
        state["step"] = 2
        await sm.save_session("s/1", state)
    async with castate.StateManager(castate.FileStorageBackend(url)) as sm:
        assert (await sm.load_session("s/1"))["step"] == 2
        restored = await sm.restore_checkpoint(cp)
        assert restored["step"] == 1
        assert restored["blob"] == b"\x00\xff"
        assert [c.name for c in await sm.list_checkpoints("s/1")] == ["before"]
    fs = castate.FileStorageBackend(url)
    async with fs:
        await fs.save("k", {"a": 1})
        assert await fs.load("k") == {"a": 1}
        assert await fs.list_keys() == ["k"]
