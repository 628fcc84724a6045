"""StateManager: sessions, checkpoints, restore, listing and deletion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import ConflictError, InvalidKeyError, NotFoundError


async def objects_in(sm: castate.StateManager) -> int:
    return sum([1 async for _ in sm.repository.backend.iter_objects()])


async def test_save_load_roundtrip(manager: castate.StateManager) -> None:
    state = {"messages": [{"role": "user", "content": "hi"}], "step": 1, "blob": b"\x00\x01"}
    commit = await manager.save_session("s1", state)
    assert isinstance(commit, str)
    assert len(commit) == 64
    assert await manager.load_session("s1") == state
    assert await manager.load_session("nope") is None


async def test_checkpoints_are_o1_refs(manager: castate.StateManager) -> None:
    state = {"messages": [{"content": f"m{i} " * 40} for i in range(2_000)]}
    await manager.save_session("s", state)
    before = await objects_in(manager)
    ids = [await manager.create_checkpoint("s", f"cp{i}") for i in range(20)]
    assert await objects_in(manager) == before  # no copy, no new object
    assert len(set(ids)) == 20
    assert await manager.restore_checkpoint(ids[0]) == state


async def test_restore_returns_the_checkpointed_state(manager: castate.StateManager) -> None:
    state: dict[str, Any] = {"step": 0, "log": []}
    checkpoints = {}
    for step in range(10):
        state["step"] = step
        state["log"].append(f"step {step}")
        await manager.save_session("run", state)
        checkpoints[step] = await manager.create_checkpoint("run", name=f"after_{step}")
    for step, cp in checkpoints.items():
        restored = await manager.restore_checkpoint(cp)
        assert restored["step"] == step
        assert restored["log"] == [f"step {i}" for i in range(step + 1)]
    assert (await manager.load_session("run"))["step"] == 9  # restore does not move the session


async def test_same_name_twice_in_one_second_gives_two_checkpoints(manager: castate.StateManager) -> None:
    await manager.save_session("s", {"v": 1})
    a = await manager.create_checkpoint("s", "same")
    await manager.save_session("s", {"v": 2})
    with pytest.warns(DeprecationWarning, match="checkpoint_name"):
        b = await manager.create_checkpoint("s", checkpoint_name="same")  # the old spelling still works
    assert a != b
    assert (await manager.restore_checkpoint(a))["v"] == 1
    assert (await manager.restore_checkpoint(b))["v"] == 2
    listed = await manager.list_checkpoints("s")
    assert [c.checkpoint_id for c in listed] == [b, a]  # newest first
    assert [c["name"] for c in listed] == ["same", "same"]


async def test_checkpoint_name_arguments(manager: castate.StateManager) -> None:
    await manager.save_session("s", {"v": 1})
    with pytest.raises(ValueError, match="once"), pytest.warns(DeprecationWarning, match="checkpoint_name"):
        await manager.create_checkpoint("s", "a", checkpoint_name="b")
    with pytest.raises(NotFoundError, match="no session"):
        await manager.create_checkpoint("missing", "a")
    with pytest.raises(InvalidKeyError):
        await manager.create_checkpoint("s", "")
    cp = await manager.create_checkpoint("s", "m", metadata={"reason": "before api call"})
    (info,) = await manager.list_checkpoints("s")
    assert info.checkpoint_id == cp
    assert info.metadata == {"reason": "before api call"}
    assert await manager.restore_checkpoint(cp) == {"v": 1}


async def test_list_sessions_records(manager: castate.StateManager) -> None:
    await manager.save_session("b", {"v": 1}, metadata={"owner": "team-b"})
    await manager.save_session("a", {"v": 1})
    await manager.create_checkpoint("a", "x")
    await manager.create_checkpoint("a", "y")
    sessions = await manager.list_sessions()
    assert [s.session_id for s in sessions] == ["a", "b"]
    a, b = sessions
    assert a["session_id"] == "a"
    assert a.checkpoint_count == 2
    assert b.checkpoint_count == 0
    assert b.metadata == {"owner": "team-b"}
    assert isinstance(a.timestamp, float)
    assert a.timestamp == pytest.approx(__import__("time").time(), abs=60)
    assert dict(a)["checkpoint_count"] == 2


async def test_delete_session_removes_its_checkpoints_only(manager: castate.StateManager) -> None:
    await manager.save_session("s", {"v": 1})
    await manager.save_session("s_other", {"v": 2})
    cp = await manager.create_checkpoint("s", "x")
    keep = await manager.create_checkpoint("s_other", "x")
    assert await manager.delete_session("s") == 2
    assert await manager.load_session("s") is None
    assert await manager.list_checkpoints("s") == []
    with pytest.raises(NotFoundError):
        await manager.restore_checkpoint(cp)
    assert await manager.restore_checkpoint(keep) == {"v": 2}
    assert await manager.delete_session("s") == 0


async def test_restore_of_unknown_or_malformed_ids(manager: castate.StateManager) -> None:
    with pytest.raises(NotFoundError):
        await manager.restore_checkpoint("s/x/20240101T000000.000000Z-abcdef")
    for bad in ["", "no-slashes", "a/b", "../../etc/passwd", "a/b/c/d", 42]:
        with pytest.raises(InvalidKeyError):
            await manager.restore_checkpoint(bad)  # type: ignore[arg-type]


async def test_stale_manager_gets_a_conflict(store_path: Path) -> None:
    a = castate.StateManager(store_path)
    b = castate.StateManager(store_path)
    try:
        await a.save_session("s", {"v": 1})
        await b.load_session("s")
        await b.save_session("s", {"v": 2})
        with pytest.raises(ConflictError):
            await a.save_session("s", {"v": 3})
        assert await a.load_session("s") == {"v": 2}
    finally:
        await a.close()
        await b.close()


async def test_state_manager_over_a_backend_object() -> None:
    sm = castate.StateManager(castate.MemoryBackend())
    await sm.save_session("m", {"v": [1, 2]})
    cp = await sm.create_checkpoint("m", "c")
    assert await sm.restore_checkpoint(cp) == {"v": [1, 2]}
    assert [s.session_id for s in await sm.list_sessions()] == ["m"]


class DictBackend(castate.StorageBackend):
    """Any object with the dict storage interface: here, a plain dict."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def save(self, key: str, data: dict[str, Any]) -> None:
        import copy

        self.data[key] = copy.deepcopy(data)

    async def load(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.data if k.startswith(prefix))

    async def exists(self, key: str) -> bool:
        return key in self.data


async def test_state_manager_over_any_dict_storage() -> None:
    storage = DictBackend()
    sm = castate.StateManager(storage)
    await sm.save_session("p", {"v": 1})
    cp = await sm.create_checkpoint("p", "first")
    await sm.save_session("p", {"v": 2})
    cp2 = await sm.create_checkpoint("p", "first")
    assert cp != cp2
    assert await sm.load_session("p") == {"v": 2}
    assert await sm.restore_checkpoint(cp) == {"v": 1}
    assert [c.checkpoint_id for c in await sm.list_checkpoints("p")] == [cp2, cp]
    assert [s.session_id for s in await sm.list_sessions()] == ["p"]
    assert (await sm.list_sessions())[0].checkpoint_count == 2
    assert await sm.delete_session("p") == 3
    assert storage.data == {}
    with pytest.raises(TypeError, match="no castate repository"):
        _ = sm.repository


async def test_plain_dict_storage_keeps_no_commits() -> None:
    """What only a castate store can do says so over plain dict storage, instead of half-working."""
    storage = DictBackend()
    async with castate.StateManager(storage) as sm:
        assert await sm.save_session("p", {"v": 1}) is None
        assert sm.last_seen("p") is None
        with pytest.raises(TypeError, match="expected= needs a castate store"):
            await sm.create_checkpoint("p", "first", expected="00" * 32)
        assert await sm.list_checkpoints("p") == []
        assert await sm.load_session("p") == {"v": 1}
    with pytest.raises(TypeError, match="auto_checkpoint needs a castate store"):
        castate.StateManager(storage, auto_checkpoint=castate.AutoCheckpoint(every_saves=2))


def test_state_manager_rejects_objects_that_are_not_storage() -> None:
    with pytest.raises(TypeError, match="not a storage backend"):
        castate.StateManager(object())  # type: ignore[arg-type]


async def test_list_sessions_times_a_session_by_its_last_head_move(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SessionInfo.timestamp`` is when the head last moved (as ``castate sessions`` UPDATED and
    retention say), not when the state at the head was saved: a fork or reset of an old save is new."""
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)  # these saves happened an hour ago
    async with castate.StateManager(store_path) as sm:
        await sm.save_session("old-run", {"step": 1})
        cp = await sm.create_checkpoint("old-run", "one")
        await sm.save_session("reset", {"step": 1})
        await sm.save_session("reset", {"step": 2})
    monkeypatch.undo()
    async with castate.StateManager(store_path) as sm:
        await sm.fork(cp, "forked")  # now
        await sm.reset_session("reset", to="reset~1")  # now
        listed = {s.session_id: s for s in await sm.list_sessions()}
        hour_ago = time.time() - 3600
        assert listed["old-run"].timestamp < hour_ago + 60
        assert listed["forked"].timestamp > hour_ago + 3000
        assert listed["reset"].timestamp > hour_ago + 3000
        assert listed["forked"].head == listed["old-run"].head  # the same commit...
        [saved] = await sm.history("forked", limit=1)
        assert saved.timestamp < hour_ago + 60  # ...saved an hour ago, which history tells
