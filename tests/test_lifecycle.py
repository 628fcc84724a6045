"""Critical sections (checkpointed), and pause/resume persisted in the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import castate
from castate.autocheckpoint import AutoCheckpoint
from castate.errors import NotFoundError


async def test_checkpointed_keeps_the_work_of_a_block_that_succeeds(manager: castate.StateManager) -> None:
    await manager.save_session("s", {"step": 1})
    async with manager.checkpointed("s", "before_api_call") as cp:
        await manager.save_session("s", {"step": 2})
    assert (await manager.load_session("s"))["step"] == 2
    assert (await manager.restore_checkpoint(cp))["step"] == 1
    assert [c.name for c in await manager.list_checkpoints("s")] == ["before_api_call"]


async def test_checkpointed_moves_the_session_back_when_the_block_raises(store_path: Path) -> None:
    sm = castate.StateManager(store_path)
    try:
        await sm.save_session("s", {"step": 1, "log": ["one"]})
        seen: dict[str, str | None] = {}

        async def critical() -> None:
            async with sm.checkpointed("s", "before_api_call") as cp:
                seen["cp"] = cp
                seen["failed"] = await sm.save_session("s", {"step": 2, "log": ["one", "half-done"]})
                raise RuntimeError("api down")

        with pytest.raises(RuntimeError, match="api down"):
            await critical()
        cp, failed = seen["cp"], seen["failed"]
        assert cp is not None
        assert failed is not None
        assert await sm.load_session("s") == {"step": 1, "log": ["one"]}
        ref = "sessions/s"
        last = (await sm.repository.reflog(ref))[-1]
        assert last.old == bytes.fromhex(failed)  # the failed work stays reachable from the reflog
        assert last.new == await sm.repository.head(f"checkpoints/{cp}")
        assert last.message.startswith("restore s to checkpoint")
        await sm.save_session("s", {"step": 2, "log": ["one", "two"]})  # the session goes on from there
    finally:
        await sm.close()
    async with castate.StateManager(store_path) as fresh:
        assert await fresh.load_session("s") == {"step": 2, "log": ["one", "two"]}


async def test_checkpointed_restores_on_cancellation(manager: castate.StateManager) -> None:
    await manager.save_session("s", {"step": 1})

    async def critical() -> None:
        async with manager.checkpointed("s", "cp"):
            await manager.save_session("s", {"step": 2})
            await asyncio.sleep(3600)

    task = asyncio.create_task(critical())
    while (await manager.load_session("s"))["step"] != 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await manager.load_session("s"))["step"] == 1


async def test_a_failed_restore_is_reported_on_the_original_error(
    manager: castate.StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    await manager.save_session("s", {"step": 1})

    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    async def critical() -> None:
        async with manager.checkpointed("s", "cp"):
            await manager.save_session("s", {"step": 2})
            monkeypatch.setattr(manager.repository.backend, "update_refs", broken)
            raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input") as info:
        await critical()
    assert any("could not restore session 's'" in n and "disk gone" in n for n in info.value.__notes__)


async def test_checkpointed_needs_an_existing_session_and_a_castate_store(manager: castate.StateManager) -> None:
    with pytest.raises(NotFoundError):
        async with manager.checkpointed("nope", "cp"):
            pass

    class DictStore:
        def __init__(self) -> None:
            self.data: dict[str, dict] = {}

        async def save(self, key: str, data: dict) -> None:
            self.data[key] = data

        async def load(self, key: str) -> dict | None:
            return self.data.get(key)

        async def delete(self, key: str) -> None:
            self.data.pop(key, None)

        async def list_keys(self, prefix: str = "") -> list[str]:
            return sorted(k for k in self.data if k.startswith(prefix))

    with pytest.raises(TypeError, match="no castate repository"):
        castate.StateManager(DictStore()).checkpointed("s", "cp")


async def test_restoring_forgets_watched_fields(store_path: Path) -> None:
    sm = castate.StateManager(store_path, auto_checkpoint=AutoCheckpoint(on_change="status", name="auto"))
    try:
        await sm.save_session("s", {"status": "a"})

        async def critical() -> None:
            async with sm.checkpointed("s", "cp"):
                await sm.save_session("s", {"status": "b"})  # a change: automatic checkpoint
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await critical()
        # the head is back at status "a"; a save of "a" is no change from the head
        await sm.save_session("s", {"status": "a", "n": 1})
        assert [c.name for c in await sm.list_checkpoints("s")].count("auto") == 1
    finally:
        await sm.close()


async def session_info(sm: castate.StateManager, session_id: str) -> castate.SessionInfo:
    (info,) = [s for s in await sm.list_sessions() if s.session_id == session_id]
    return info


async def test_pause_and_resume_are_persisted(store_path: Path) -> None:
    state = {"step": 3, "messages": [f"message {i} " * 20 for i in range(200)]}
    async with castate.StateManager(store_path) as sm:
        await sm.save_session("s", state, metadata={"owner": "team-a"})
        objects = (await sm.repository.backend.stats())["objects"]
        before = time.time()
        await sm.pause_session("s", reason="waiting for approval")
        after = time.time()
        assert (await sm.repository.backend.stats())["objects"] == objects + 1  # one commit, no state
        again = await sm.pause_session("s")  # pausing a paused session changes nothing
        assert again == (await sm.repository.head("sessions/s") or b"").hex()
    async with castate.StateManager(store_path) as sm:  # a new process sees the pause
        info = await session_info(sm, "s")
        assert info.paused
        assert before <= info.metadata["paused_at"] <= after
        assert info.metadata["pause_reason"] == "waiting for approval"
        assert info.metadata["owner"] == "team-a"
        await sm.save_session("s", {**state, "step": 4})  # a save does not unpause
        assert (await session_info(sm, "s")).paused
        resumed = await sm.resume_session("s")
        assert resumed == {**state, "step": 4}
    async with castate.StateManager(store_path) as sm:  # the resume is on disk too
        info = await session_info(sm, "s")
        assert not info.paused
        assert info.metadata["resumed_at"] >= info.metadata["paused_at"]
        await sm.save_session("s", {**state, "step": 5})
        info = await session_info(sm, "s")
        assert not info.paused
        assert "resumed_at" in info.metadata  # the times stay with the session
        head = await sm.repository.head("sessions/s")
        assert await sm.resume_session("s") == {**state, "step": 5}  # not paused: no new commit
        assert await sm.repository.head("sessions/s") == head
        names = [c.name for _, c in await sm.repository.log("sessions/s")]
        assert names.count("pause") == 1
        assert names.count("resume") == 1


async def test_pause_and_resume_of_a_missing_session(manager: castate.StateManager) -> None:
    with pytest.raises(NotFoundError):
        await manager.pause_session("nope")
    with pytest.raises(NotFoundError):
        await manager.resume_session("nope")
