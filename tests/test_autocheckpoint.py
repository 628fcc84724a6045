"""Automatic checkpoints: every N saves, every T seconds (injected clock), on field changes, retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import castate
from castate.autocheckpoint import AutoCheckpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(path: Path, **policy: Any) -> castate.StateManager:
    return castate.StateManager(path, auto_checkpoint=AutoCheckpoint(**policy))


async def auto_steps(sm: castate.StateManager, session: str = "run") -> list[int]:
    """The ``step`` of every automatic checkpoint, oldest first."""
    cps = [c for c in await sm.list_checkpoints(session) if c.name == "auto"]
    return [(await sm.restore_checkpoint(c.checkpoint_id))["step"] for c in reversed(cps)]


async def test_every_n_saves(store_path: Path) -> None:
    sm = manager(store_path, every_saves=3)
    try:
        for step in range(1, 11):
            await sm.save_session("run", {"step": step})
        assert await auto_steps(sm) == [3, 6, 9]
    finally:
        await sm.close()


async def test_every_t_seconds_with_an_injected_clock(store_path: Path) -> None:
    clock = Clock()
    sm = manager(store_path, every_seconds=60, clock=clock)
    try:
        for step, advance in enumerate([0, 30, 29, 2, 10, 49, 1, 200], start=1):
            clock.now += advance
            await sm.save_session("run", {"step": step})
        # the timer starts at the first save (t=1000): 1061 at step 4, 1121 at step 7, 1321 at step 8
        assert await auto_steps(sm) == [4, 7, 8]
    finally:
        await sm.close()


async def test_on_change_of_a_field(store_path: Path) -> None:
    sm = manager(store_path, on_change=["status", "metadata.phase"])
    try:
        states = [
            {"status": "running", "metadata": {"phase": "plan"}},  # first save: nothing to compare with
            {"status": "running", "metadata": {"phase": "plan"}},
            {"status": "waiting", "metadata": {"phase": "plan"}},  # status changed
            {"status": "waiting", "metadata": {"phase": "plan"}},
            {"status": "waiting", "metadata": {"phase": "act"}},  # nested field changed
            {"status": "waiting"},  # nested field disappeared
            {"status": 1},  # "waiting" -> 1
            {"status": 1.0},  # 1 and 1.0 are different values
            {"status": True},
        ]
        for step, state in enumerate(states, start=1):
            await sm.save_session("run", {**state, "step": step})
        assert await auto_steps(sm) == [3, 5, 6, 7, 8, 9]
    finally:
        await sm.close()


async def test_a_loaded_state_is_what_the_next_save_is_compared_with(store_path: Path) -> None:
    async with castate.StateManager(store_path) as plain:
        await plain.save_session("run", {"status": "running", "step": 1})
    sm = manager(store_path, on_change="status")
    try:
        await sm.load_session("run")
        await sm.save_session("run", {"status": "done", "step": 2})
        assert await auto_steps(sm) == [2]
    finally:
        await sm.close()


async def test_keep_last_prunes_only_automatic_checkpoints(store_path: Path) -> None:
    sm = manager(store_path, every_saves=2, keep_last=2)
    try:
        named = []
        for step in range(1, 13):
            await sm.save_session("run", {"step": step})
            if step % 5 == 0:
                named.append(await sm.create_checkpoint("run", f"milestone-{step}"))
        await sm.save_session("other", {"step": 100})
        await sm.save_session("other", {"step": 101})
        assert await auto_steps(sm) == [10, 12]
        names = sorted(c.name for c in await sm.list_checkpoints("run"))
        assert names == ["auto", "auto", "milestone-10", "milestone-5"]
        for cp in named:
            await sm.restore_checkpoint(cp)
        assert await auto_steps(sm, "other") == [101]  # retention is per session
        log = await sm.repository.reflog()
        assert any(e.message.startswith("auto checkpoint retention") and e.new is None for e in log)
        assert any(e.message == "auto checkpoint (2 saves)" for e in log)
    finally:
        await sm.close()


async def test_any_automatic_checkpoint_restarts_count_and_timer(store_path: Path) -> None:
    clock = Clock()
    sm = manager(store_path, every_saves=4, every_seconds=100, on_change="status", clock=clock)
    try:
        await sm.save_session("run", {"step": 1, "status": "a"})
        await sm.save_session("run", {"step": 2, "status": "b"})  # change: count and timer restart
        clock.now += 99
        await sm.save_session("run", {"step": 3, "status": "b"})
        await sm.save_session("run", {"step": 4, "status": "b"})
        await sm.save_session("run", {"step": 5, "status": "b"})
        clock.now += 1  # 100 s after step 2
        await sm.save_session("run", {"step": 6, "status": "b"})  # 4 saves after step 2, and 100 s
        await sm.save_session("run", {"step": 7, "status": "b"})
        assert await auto_steps(sm) == [2, 6]
    finally:
        await sm.close()


async def test_an_automatic_checkpoint_points_at_the_save_that_made_it(store_path: Path) -> None:
    sm = manager(store_path, every_saves=1)
    try:
        commit = await sm.save_session("run", {"step": 1})
        (cp,) = await sm.list_checkpoints("run")
        assert cp.commit == commit
    finally:
        await sm.close()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({}, "needs every_saves"),
        ({"every_saves": 0}, "every_saves"),
        ({"every_saves": 1.5}, "every_saves"),
        ({"every_seconds": -1}, "every_seconds"),
        ({"every_seconds": float("inf")}, "every_seconds"),
        ({"every_saves": 1, "keep_last": 0}, "keep_last"),
        ({"on_change": [""]}, "on_change"),
        ({"on_change": ["a..b"]}, "on_change"),
    ],
)
def test_bad_policies_are_refused(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoCheckpoint(**policy)


def test_auto_checkpoint_needs_a_castate_store() -> None:
    class DictStore:
        async def save(self, key: str, data: dict) -> None: ...
        async def load(self, key: str) -> dict | None: ...
        async def delete(self, key: str) -> None: ...
        async def list_keys(self, prefix: str = "") -> list[str]: ...

    with pytest.raises(TypeError, match="castate store"):
        castate.StateManager(DictStore(), auto_checkpoint=AutoCheckpoint(every_saves=1))
