"""castate draws its internal random ids (store ids, pack and temp-file names, lock tokens)
from ``os.urandom``, never from ``uuid.uuid4`` (issue 16, item 14): LangGraph's own tests
patch ``uuid4`` to make message ids deterministic, and creating a store used to consume
five of them, changing the graph's results."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import NoReturn

import pytest

import castate
from castate.backends.sqlite import SQLiteBackend


def no_uuid4() -> NoReturn:
    raise AssertionError("castate called uuid.uuid4")


@pytest.fixture
def uuid4_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uuid, "uuid4", no_uuid4)


async def exercise(sm: castate.StateManager, tmp_path: Path) -> None:
    await sm.save_session("s", {"messages": [f"m{i}" for i in range(200)]})
    cp = await sm.create_checkpoint("s", "cp", metadata={"a": 1})
    await sm.save_session("s", {"messages": []})
    await sm.gc(grace=0, reflog_expire=0)
    assert (await sm.fsck(full=True)).ok
    await sm.export_session("s", tmp_path / "s.castate")
    assert await sm.restore_checkpoint(cp) == {"messages": [f"m{i}" for i in range(200)]}


@pytest.mark.usefixtures("uuid4_forbidden")
async def test_a_local_store_draws_no_uuid4(tmp_path: Path) -> None:
    # Small volumes: saves start new volume files and gc moves live blobs into fresh ones.
    async with castate.StateManager(castate.LocalBackend(tmp_path / "small", volume_size=4096)) as sm:
        await exercise(sm, tmp_path)
    assert "00000001.vol" not in {p.name for p in (tmp_path / "small" / "volumes").iterdir()}  # new volumes made
    async with castate.StateManager(tmp_path / "state") as sm:
        await exercise(sm, tmp_path)
        assert (await sm.repair_refs()).damaged is False


async def test_database_stores_draw_no_uuid4(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uuid, "uuid4", no_uuid4)  # after the fixtures: the test servers may draw some
    async with castate.StateManager(SQLiteBackend(tmp_path / "state.db")) as sm:
        await exercise(sm, tmp_path)
    async with castate.StateManager(castate.open(redis_url)) as sm:
        await exercise(sm, tmp_path)
