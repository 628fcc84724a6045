"""SyncStateManager: the StateManager's methods as blocking calls, on a private loop thread."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import AlreadyExistsError, ConflictError, NotFoundError


@pytest.fixture
def ssm(store_path: Path):
    with castate.SyncStateManager(store_path) as sm:
        yield sm


def test_save_load_checkpoint_restore_list(ssm: castate.SyncStateManager) -> None:
    state: dict[str, Any] = {"step": 1, "messages": [{"role": "user", "content": "hi"}], "blob": b"\x00"}
    commit = ssm.save_session("run-1", state)
    assert isinstance(commit, str)
    assert len(commit) == 64
    assert ssm.last_seen("run-1") == commit
    assert ssm.load_session("run-1") == state
    assert ssm.load_session("nope") is None
    cp = ssm.create_checkpoint("run-1", "before_call", metadata={"why": "test"})
    state["step"] = 2
    ssm.save_session("run-1", state)
    assert ssm.restore_checkpoint(cp)["step"] == 1
    assert ssm.load_session("run-1") == state  # restore_checkpoint leaves the session alone
    [info] = ssm.list_sessions()
    assert (info.session_id, info.checkpoint_count) == ("run-1", 1)
    [cpinfo] = ssm.list_checkpoints("run-1")
    assert (cpinfo.checkpoint_id, cpinfo.name, cpinfo.metadata) == (cp, "before_call", {"why": "test"})
    with pytest.raises(NotFoundError):
        ssm.restore_checkpoint("run-1/missing/20260101T000000.000000Z-000000")


def test_diff_fork_reset_session_delete_gc(ssm: castate.SyncStateManager) -> None:
    ssm.save_session("run-1", {"step": 1, "log": ["a"]})
    cp = ssm.create_checkpoint("run-1", "one")
    ssm.save_session("run-1", {"step": 2, "log": ["a", "b"]})
    changes = ssm.diff(cp, "run-1")
    assert {(c.op, c.path) for c in changes} == {("replace", "/step"), ("add", "/log/1")}
    assert ssm.fork(cp, "retry") == ssm.resolve(cp).commit.hex()
    assert ssm.load_session("retry") == {"step": 1, "log": ["a"]}
    with pytest.raises(AlreadyExistsError):
        ssm.fork(cp, "retry")
    result = ssm.reset_session(to=cp)
    assert result.changed
    assert result.session_id == "run-1"
    assert ssm.load_session("run-1") == {"step": 1, "log": ["a"]}
    assert ssm.delete_session("retry") == 1
    report = ssm.gc(grace=0, reflog_expire=0)  # the step-2 save no ref or reflog entry holds now
    assert report.candidates > 0
    assert report.deleted + report.left == report.candidates
    assert not ssm.fsck(full=True).damaged_refs
    assert ssm.load_session("run-1") == {"step": 1, "log": ["a"]}
    assert ssm.restore_checkpoint(cp) == {"step": 1, "log": ["a"]}


def test_restore_into_session_is_a_deprecated_alias_here_too(ssm: castate.SyncStateManager) -> None:
    ssm.save_session("run-1", {"step": 1})
    cp = ssm.create_checkpoint("run-1", "one")
    ssm.save_session("run-1", {"step": 2})
    with pytest.warns(DeprecationWarning, match="reset_session") as caught:
        result = ssm.restore_into_session(cp, "run-1")
    assert caught[0].filename == __file__  # warned in the caller's thread, at its line
    assert result.changed
    assert ssm.load_session("run-1") == {"step": 1}


def test_pause_resume_update_and_checkpointed(ssm: castate.SyncStateManager) -> None:
    ssm.save_session("s", {"n": 0})
    ssm.pause_session("s", reason="night")
    assert ssm.list_sessions()[0].paused
    assert ssm.resume_session("s") == {"n": 0}
    ssm.update_session("s", lambda st: {"n": (st or {"n": 0})["n"] + 1})
    assert ssm.load_session("s") == {"n": 1}
    entered: list[str] = []

    def risky() -> None:
        with ssm.checkpointed("s", "risky") as cp:
            entered.append(cp)
            ssm.save_session("s", {"n": 99})
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        risky()
    assert ssm.load_session("s") == {"n": 1}  # moved back to the checkpoint
    assert [c.checkpoint_id for c in ssm.list_checkpoints("s")] == entered
    with ssm.checkpointed("s", "fine"):
        ssm.save_session("s", {"n": 2})
    assert ssm.load_session("s") == {"n": 2}


async def test_works_inside_a_running_event_loop(store_path: Path) -> None:
    # asyncio.run() refuses here (Jupyter's situation); the sync manager runs on its own loop
    asyncio.get_running_loop()
    with castate.SyncStateManager(store_path) as sm:
        sm.save_session("nb", {"cell": 1})
        cp = sm.create_checkpoint("nb", "c1")
        assert sm.restore_checkpoint(cp) == {"cell": 1}
    async with castate.StateManager(store_path) as asm:  # the same store, read by the async API
        assert await asm.load_session("nb") == {"cell": 1}


def test_two_threads_share_one_manager(ssm: castate.SyncStateManager) -> None:
    rounds = 15
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for i in range(rounds):
                ssm.save_session(name, {"i": i})
                ssm.update_session("shared", lambda st: {"count": (st or {"count": 0})["count"] + 1}, attempts=100)
            ssm.create_checkpoint(name, "done")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ssm.load_session("shared") == {"count": 2 * rounds}  # no update lost
    assert ssm.load_session("t0") == ssm.load_session("t1") == {"i": rounds - 1}
    assert [s.checkpoint_count for s in ssm.list_sessions()] == [0, 1, 1]


def test_errors_and_conflicts_are_the_async_ones(store_path: Path) -> None:
    with castate.SyncStateManager(store_path) as a, castate.SyncStateManager(store_path) as b:
        first = a.save_session("s", {"v": 1})
        b.load_session("s")
        a.save_session("s", {"v": 2})
        with pytest.raises(ConflictError):
            b.save_session("s", {"v": 3})  # b built on a head another writer replaced
        with pytest.raises(ConflictError):
            b.create_checkpoint("s", "x", expected=first)
        assert b.load_session("s") == {"v": 2}


def test_a_callback_calling_the_manager_back_is_refused(ssm: castate.SyncStateManager) -> None:
    ssm.save_session("s", {"n": 1})

    def fn(state: dict[str, Any] | None) -> dict[str, Any]:
        ssm.load_session("s")  # would wait for its own loop
        return {"n": 2}

    with pytest.raises(RuntimeError, match="its own loop thread"):
        ssm.update_session("s", fn)
    assert ssm.load_session("s") == {"n": 1}


def test_close_ends_the_thread_and_later_calls_fail(store_path: Path) -> None:
    sm = castate.SyncStateManager(store_path)
    sm.save_session("s", {"a": 1})
    thread = sm._thread
    sm.close()
    sm.close()  # twice: a no-op
    assert sm.closed
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        sm.load_session("s")
    with castate.SyncStateManager(store_path) as again:
        assert again.load_session("s") == {"a": 1}


def test_a_dropped_manager_leaves_no_thread(store_path: Path) -> None:
    sm = castate.SyncStateManager(castate.MemoryBackend())
    sm.save_session("s", {"a": 1})
    thread = sm._thread
    del sm
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_bad_construction_raises_and_leaves_no_thread() -> None:
    before = {t.ident for t in threading.enumerate() if t.name == "castate-sync"}
    with pytest.raises(TypeError, match="not a storage backend"):
        castate.SyncStateManager(object())  # type: ignore[arg-type]  # the wrong type, on purpose
    after = {t.ident for t in threading.enumerate() if t.name == "castate-sync" and t.is_alive()}
    assert after <= before


def test_sync_close_does_not_strand_a_call_in_flight(tmp_path: Path) -> None:
    """close() from one thread while another thread's update_session runs on the loop: the
    loop is stopped and closed under the pending task, whose caller then waits forever."""
    import threading

    sm = castate.SyncStateManager(castate.FileStorageBackend(tmp_path / "store"))
    sm.save_session("s", {"n": 0})
    entered = threading.Event()
    outcome: list[Any] = []

    async def fn(state: Any) -> Any:
        entered.set()
        await asyncio.sleep(1.0)
        return {"n": state["n"] + 1}

    def worker() -> None:
        try:
            outcome.append(sm.update_session("s", fn))
        except BaseException as exc:  # an error is fine; never returning is not
            outcome.append(exc)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    assert entered.wait(10)
    sm.close()
    t.join(5)
    assert not t.is_alive(), "update_session never returned after close()"
    assert outcome
