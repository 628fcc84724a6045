"""The store's maintenance record: gc and fsck runs recorded under meta/health, bounded,
safe against a concurrent recorder, and replaced (not repaired) when damaged."""

from __future__ import annotations

import pytest

import castate
from castate.repository import health
from castate.repository.health import HEALTH_REF, read_runs, record_run
from tests.memory_objects import MemoryObjects


async def test_gc_and_fsck_record_their_runs_when_asked() -> None:
    sm = castate.StateManager(MemoryObjects())
    await sm.save_session("a", {"v": "x" * 5000})
    await sm.fsck()
    await sm.gc(grace=0, dry_run=True, record=True)
    assert await read_runs(sm.repository) == []  # nothing recorded unless asked; dry runs never

    report = await sm.fsck(record=True)
    gc = await sm.gc(grace=0, record=True)
    runs = await read_runs(sm.repository)
    assert [r["op"] for r in runs] == ["fsck", "gc"]
    f, g = runs
    assert f["ok"] is True
    assert f["refs"] == report.refs == 1
    assert f["logical_bytes"] == report.logical_bytes > 5000
    assert f["reachable_bytes"] == report.reachable_bytes > 0
    assert f["problems"] == 0
    assert g["deleted"] == gc.deleted
    assert g["objects"] == gc.objects
    assert g["time"] >= f["time"]
    # The record is a ref like any other: fsck checks it, gc keeps it, sessions ignore it.
    assert HEALTH_REF in await sm.repository.list_refs()
    assert [s.session_id for s in await sm.list_sessions()] == ["a"]
    again = await sm.fsck()
    assert again.ok
    assert again.refs == 2


async def test_the_record_keeps_the_newest_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "MAX_RUNS", 3)
    repo = castate.Repository(MemoryObjects())
    for i in range(5):
        await record_run(repo, {"op": "gc", "time": float(i)})
    assert [r["time"] for r in await read_runs(repo)] == [2.0, 3.0, 4.0]


async def test_a_concurrent_recorder_loses_nothing() -> None:
    backend = MemoryObjects()
    first, second = castate.Repository(backend), castate.Repository(backend)
    await record_run(first, {"op": "fsck", "time": 1.0})
    await read_runs(first)  # first now knows the head...
    await record_run(second, {"op": "gc", "time": 2.0})  # ...which second moves
    await record_run(first, {"op": "gc", "time": 3.0})  # compare-and-swap fails once, then reads again
    assert [r["time"] for r in await read_runs(castate.Repository(backend))] == [1.0, 2.0, 3.0]


async def test_a_newer_format_is_refused() -> None:
    repo = castate.Repository(MemoryObjects())
    await repo.save(HEALTH_REF, {"format": 2, "runs": []})
    with pytest.raises(castate.UnsupportedFormatError):
        await read_runs(repo)
    sm = castate.StateManager(repo.backend)
    report = await sm.fsck(record=True)
    assert report.ok
    assert any("not recorded" in w for w in report.warnings)  # said, not silently overwritten


async def test_a_damaged_record_is_replaced() -> None:
    backend = MemoryObjects()
    repo = castate.Repository(backend)
    await record_run(repo, {"op": "gc", "time": 1.0, "note": "y" * 3000})
    head = await repo.resolve(HEALTH_REF)
    del backend._objects[head.root]
    fresh = castate.Repository(backend)
    await record_run(fresh, {"op": "fsck", "time": 2.0})
    assert [r["op"] for r in await read_runs(fresh)] == ["fsck"]
