"""MARSYS 0.2.1's own code on castate: its StateManager, CheckpointManager and Orchestra.run.

Needs marsys installed (tools/test.sh installs it and sets CASTATE_REQUIRE_MARSYS=1, which
turns a missing marsys into a failure instead of a skip). The agents are mocks that return
fixed coordination JSON: no network, no model calls.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CASTATE_REQUIRE_MARSYS"):
    import marsys.coordination.state as marsys_state
else:
    marsys_state = pytest.importorskip("marsys.coordination.state", reason="marsys is not installed")

import pydantic
from marsys.agents import Agent
from marsys.agents.memory import Message
from marsys.agents.registry import AgentRegistry
from marsys.coordination import Orchestra
from marsys.coordination.branches.types import (
    BranchResult,
    BranchState,
    BranchStatus,
    BranchTopology,
    ExecutionBranch,
    StepResult,
)
from marsys.models import ModelConfig

from castate.compat.marsys import MarsysBytesBackend, MarsysStorageBackend, marsys_storage_interface
from castate.compat.marsys_import import import_marsys_directory

logging.getLogger("marsys").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marsys.*")


class Opaque:
    def __str__(self) -> str:
        return "<opaque>"


def execution_state(session_id: str, messages: int = 50) -> dict[str, Any]:
    """A state as Orchestra passes it to save_session: live branch and result objects."""
    branch = ExecutionBranch(
        id="main",
        name="main branch",
        topology=BranchTopology(agents=["Alpha", "Beta"], entry_agent="Alpha", current_agent="Beta"),
        state=BranchState(
            status=BranchStatus.RUNNING,
            current_step=3,
            total_steps=3,
            start_time=1795777770.5,
            completed_agents={"Alpha"},
        ),
        metadata={"started": datetime.datetime(2026, 11, 27, 9, 0), "tags": {"x"}, "thing": Opaque()},
    )
    memory = [
        {"role": "assistant", "content": f"message {i} " + "text " * 40, "at": datetime.datetime(2026, 1, 1, 0, i % 60)}
        for i in range(messages)
    ]
    result = BranchResult(
        branch_id="main",
        success=True,
        final_response="done",
        total_steps=3,
        execution_trace=[StepResult(agent_name="Alpha", success=True, action_type="invoke_agent")],
        branch_memory={"Alpha": memory, "raw": [{"payload": b"\x00\x01"}]},
        metadata={"finished": datetime.datetime(2026, 11, 27, 9, 5)},
    )
    return {
        "session_id": session_id,
        "task": "not stored by MARSYS",
        "branches": {"main": branch},
        "active_branches": ["Task-7", "Task-8"],
        "completed_branches": ["main"],
        "waiting_branches": {"join": {"a", "b"}},
        "branch_results": {"main": result},
        "parent_child_map": {},
        "child_parent_map": {},
        "metadata": {"status": "running", "when": datetime.datetime(2026, 11, 27, 9, 1)},
    }


def without_save_time(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored session minus what depends on when it was saved (timestamp and the checksum over it)."""
    out = {k: v for k, v in raw.items() if k not in ("timestamp", "checksum")}
    out["active_branches"] = sorted(out["active_branches"])  # list(set): arbitrary order
    out["waiting_branches"] = {k: sorted(v) for k, v in out["waiting_branches"].items()}
    return out


def test_the_backend_is_a_marsys_storage_backend(tmp_path: Path) -> None:
    assert marsys_storage_interface() is marsys_state.StorageBackend
    assert issubclass(MarsysStorageBackend, marsys_state.StorageBackend)
    assert isinstance(MarsysStorageBackend(tmp_path / "store"), marsys_state.StorageBackend)


async def test_marsys_state_manager_saves_and_a_fresh_one_validates_the_checksum(tmp_path: Path) -> None:
    castate_backend = MarsysStorageBackend(tmp_path / "castate")
    file_backend = marsys_state.FileStorageBackend(tmp_path / "marsys")
    for backend in (castate_backend, file_backend):
        await marsys_state.StateManager(backend).save_session("s1", execution_state("s1"))
    await castate_backend.close()

    reopened = MarsysStorageBackend(tmp_path / "castate")
    try:
        raw = await reopened.load("session_s1")
        assert raw is not None
        assert without_save_time(raw) == without_save_time(await file_backend.load("session_s1"))
        loaded = await marsys_state.StateManager(reopened).load_session("s1")  # no cache: checksum checked
        assert loaded is not None
        assert isinstance(loaded["branches"]["main"], ExecutionBranch)
        assert loaded["branches"]["main"].state.status is BranchStatus.RUNNING
        assert isinstance(loaded["branch_results"]["main"], BranchResult)
        assert loaded["branch_results"]["main"].branch_memory["Alpha"][0]["at"] == "2026-01-01 00:00:00"
        assert loaded["active_branches"] == {"Task-7", "Task-8"}

        # the checksum check is live: a stored session whose checksummed fields changed is refused
        raw["completed_branches"] = ["main", "other"]
        await reopened.save("session_s1", raw)
        assert await marsys_state.StateManager(reopened).load_session("s1") is None
    finally:
        await reopened.close()


async def test_marsys_checkpoints_restore_list_and_share_storage(tmp_path: Path) -> None:
    backend = MarsysStorageBackend(tmp_path / "castate")
    try:
        sm = marsys_state.StateManager(backend)
        await sm.save_session("s1", execution_state("s1", messages=400))
        session_json = len(json.dumps(await backend.load("session_s1"), indent=2, default=str))
        before = await backend.repository.backend.stats()
        ids = [await sm.create_checkpoint("s1", f"cp{i}") for i in range(4)]
        after = await backend.repository.backend.stats()
        assert ids[0].startswith("checkpoint_s1_cp0_")
        grown = after["bytes_apparent"] - before["bytes_apparent"]
        assert grown < 0.02 * 4 * session_json, (grown, session_json)  # MARSYS's files: 4 full copies

        restored = await sm.restore_checkpoint(ids[2])
        assert restored["metadata"]["checkpoint_name"] == "cp2"
        assert restored["branch_results"] == (await backend.load("session_s1") or {})["branch_results"]
        listed = await marsys_state.CheckpointManager(sm).list_checkpoints("s1")
        assert sorted(c.checkpoint_id for c in listed) == sorted(ids)
        with pytest.raises(marsys_state.state_manager.CheckpointError):
            await sm.restore_checkpoint("checkpoint_s1_nope_1")
        await sm.delete_session("s1")  # MARSYS keeps the checkpoints of a deleted session
        assert await backend.list_keys() == sorted(ids)
    finally:
        await backend.close()


class MockAgent(Agent):
    """An agent whose _run never calls a model: it returns fixed coordination JSON."""

    def __init__(self, name: str, reply: Callable[[], dict[str, Any]]) -> None:
        super().__init__(
            model_config=ModelConfig(type="api", name="gpt-4o-mini", provider="openai", api_key="test-key"),
            goal=f"mock {name}",
            instruction="mock",
            name=name,
        )
        self._reply = reply

    async def _run(self, messages: Any, request_context: Any, run_mode: Any, **kwargs: Any) -> Message:
        return Message(role="assistant", content=json.dumps(self._reply()), name=self.name)


class CountingBackend(MarsysStorageBackend):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.saved: list[str] = []

    async def save(self, key: str, data: dict[str, Any]) -> None:
        self.saved.append(key)
        await super().save(key, data)


async def test_orchestra_run_with_a_castate_state_manager(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    alpha, beta = f"Alpha{suffix}", f"Beta{suffix}"
    agents = [  # the registry holds weak references: keep the agents alive for the run
        MockAgent(
            alpha, lambda: {"next_action": "invoke_agent", "action_input": {"agent_name": beta, "request": "go"}}
        ),
        MockAgent(beta, lambda: {"next_action": "final_response", "action_input": {"response": "beta done"}}),
    ]
    backend = CountingBackend(tmp_path / "castate")
    try:
        sm = marsys_state.StateManager(backend)
        with contextlib.redirect_stdout(io.StringIO()):  # Orchestra prints a banner
            result = await Orchestra.run(
                task="hello",
                topology={"agents": [alpha, beta], "flows": [f"{alpha} -> {beta}"]},
                agent_registry=AgentRegistry,
                state_manager=sm,
                max_steps=10,
                context={"session_id": "sess-1"},
            )
        assert result.success, result.error
        assert result.final_response == "beta done"
        assert backend.saved == ["session_sess-1", "session_sess-1"]  # the initial save, then one per branch
        assert await backend.list_keys() == ["session_sess-1"]

        fresh = await marsys_state.StateManager(backend).load_session("sess-1")
        assert fresh is not None  # checksum validated
        assert fresh["completed_branches"] == {"main"}
        assert fresh["branch_results"]["main"].success
        sessions = await marsys_state.StateManager(backend).list_sessions()
        assert [s["session_id"] for s in sessions] == ["sess-1"]
        assert sessions[0]["completed_count"] == 1

        checkpoint = await sm.create_checkpoint("sess-1", "after_run")
        assert (await sm.restore_checkpoint(checkpoint))["metadata"]["checkpoint_name"] == "after_run"
        assert len(agents) == 2
    finally:
        await backend.close()


class Turn(pydantic.BaseModel):
    role: str
    content: str
    at: datetime.datetime
    tokens: int | None = None


class Branch(pydantic.BaseModel):
    branch_id: str
    status: str
    score: float
    memory: list[Turn]


class Snapshot(pydantic.BaseModel):
    """Shaped like MARSYS main's StateSnapshot, dumped as its pause_session does."""

    framework_version: str
    session_id: str
    paused_at: datetime.datetime
    branches: dict[str, Branch]
    runnable: list[str]
    workflow_error: str | None = None
    max_steps: int = 200


def snapshot(turns: int) -> bytes:
    start = datetime.datetime(2026, 11, 27, 9, 0, tzinfo=datetime.UTC)
    memory = [
        Turn(role="assistant", content=f"étape {i}: " + "résultat " * 30, at=start + datetime.timedelta(seconds=i))
        for i in range(turns)
    ]
    snap = Snapshot(
        framework_version="0.3.0",
        session_id="sess-1",
        paused_at=start,
        branches={"main": Branch(branch_id="main", status="paused", score=0.25 * turns, memory=memory)},
        runnable=["main"],
    )
    return snap.model_dump_json(indent=2).encode("utf-8")


async def test_pydantic_snapshots_round_trip_byte_exact_and_deduplicate(tmp_path: Path) -> None:
    async with MarsysBytesBackend(tmp_path / "bytes") as store:
        backend = store.repository.backend
        first = snapshot(200)
        await store.write("sess-1/snapshot.json", first)
        assert await store.read("sess-1/snapshot.json") == first
        stored = await store.repository.load("bytes/sess-1%2Fsnapshot.json")
        assert stored["format"] == "json"  # pydantic's formatting is reproduced, so it is stored by structure
        before = (await backend.stats())["bytes_apparent"]
        second = snapshot(201)
        await store.write("sess-1/snapshot.json", second)
        assert await store.read("sess-1/snapshot.json") == second
        assert Snapshot.model_validate_json(await store.read("sess-1/snapshot.json")).branches["main"].memory[-1]
        grown = (await backend.stats())["bytes_apparent"] - before
        assert grown < 0.05 * len(second), (grown, len(second))


async def test_a_marsys_directory_imports_and_marsys_reads_it_unchanged(tmp_path: Path) -> None:
    file_backend = marsys_state.FileStorageBackend(tmp_path / "marsys")
    sm = marsys_state.StateManager(file_backend)
    checkpoints = []
    for step in range(5):
        await sm.save_session("s1", execution_state("s1", messages=100 + 20 * step))
        checkpoints.append(await sm.create_checkpoint("s1", f"step{step}"))
    await sm.save_session("s2", execution_state("s2", messages=10))

    report = await import_marsys_directory(tmp_path / "marsys", tmp_path / "castate")
    assert report.ok, report.summary()
    assert len(report.imported) == 7
    # The objects take 24.6 KB of 313 KB in packs (about 1/13). Each of the 226 objects also has
    # a 48-byte index entry (docs/format.md §6.2), and the volume records and the ref journal
    # frame them: the store grows by 41 KB in all (about 1/7.6; 28.9 to 33.7 KB in format 1,
    # whose objects took more but had no per-object index).
    assert report.store_bytes_added < report.source_bytes / 6, report.summary()

    backend = MarsysStorageBackend(tmp_path / "castate")
    try:
        assert await backend.list_keys() == await file_backend.list_keys()
        assert (await backend.repository.backend.stats())["pack_bytes"] < report.source_bytes / 10
        on_castate = marsys_state.StateManager(backend)
        for sid in ("s1", "s2"):
            loaded = await on_castate.load_session(sid)  # fresh manager: checksum validated
            assert loaded is not None
            assert (
                loaded["branch_results"]
                == (await marsys_state.StateManager(file_backend).load_session(sid))["branch_results"]
            )
        for cp in checkpoints:
            assert await on_castate.restore_checkpoint(cp) == await sm.restore_checkpoint(cp)
        listed = await marsys_state.CheckpointManager(on_castate).list_checkpoints("s1")
        expected = await marsys_state.CheckpointManager(sm).list_checkpoints("s1")
        assert [c.checkpoint_id for c in listed] == [c.checkpoint_id for c in expected]
    finally:
        await backend.close()
