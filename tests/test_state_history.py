"""StateManager.history: a session's past saves, newest first, in pages."""

from __future__ import annotations

from pathlib import Path

import pytest

import castate
from castate.errors import NotFoundError


async def test_history_pages_through_the_saves(manager: castate.StateManager) -> None:
    commits = [await manager.save_session("run", {"step": i}, metadata={"step": i}) for i in range(7)]
    await manager.pause_session("run", reason="lunch")
    page = await manager.history("run", limit=3)
    assert page[0].name == "pause"
    assert page[0].metadata["pause_reason"] == "lunch"
    assert [e.commit for e in page[1:]] == [commits[6], commits[5]]
    assert [e.metadata["step"] for e in page[1:]] == [6, 5]
    assert all(e.name is None for e in page[1:])
    assert [e.parent for e in page] == [commits[6], commits[5], commits[4]]
    assert page[0].timestamp >= page[1].timestamp >= page[2].timestamp
    seen = list(page)
    while len(page) == 3:
        page = await manager.history("run", limit=3, before=page[-1].commit)
        seen += page
    assert [e.commit for e in seen[1:]] == commits[::-1]
    assert seen[-1].parent is None  # the first save
    assert len({e.commit for e in seen}) == 8
    assert await manager.history("run", before=commits[0]) == []


async def test_history_takes_references_and_refuses_what_is_not_there(manager: castate.StateManager) -> None:
    commits = [await manager.save_session("run", {"step": i}) for i in range(4)]
    await manager.create_checkpoint("run", "half")
    assert [e.commit for e in await manager.history("run", before="run@half")] == commits[2::-1]
    assert [e.commit for e in await manager.history("run", limit=1, before="run~1")] == [commits[1]]
    with pytest.raises(NotFoundError, match="no session 'nope'"):
        await manager.history("nope")
    with pytest.raises(ValueError, match="limit"):
        await manager.history("run", limit=0)


async def test_history_lists_saves_whose_states_gc_removed(store_path: Path) -> None:
    async with castate.StateManager(store_path) as sm:
        commits = [await sm.save_session("run", {"step": i}) for i in range(4)]
        report = await sm.gc(grace=0, reflog_expire=0)
        assert report.deleted > 0  # the older states' objects
        assert [e.commit for e in await sm.history("run")] == commits[::-1]  # their commits stay
        assert await sm.restore_checkpoint("run") == {"step": 3}


def test_the_sync_api_has_history(store_path: Path) -> None:
    with castate.SyncStateManager(store_path) as sm:
        first = sm.save_session("s", {"n": 1})
        second = sm.save_session("s", {"n": 2})
        assert [e.commit for e in sm.history("s")] == [second, first]
        assert isinstance(sm.history("s")[0], castate.SaveInfo)
