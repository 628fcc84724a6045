"""Shared sessions (issue 16, items 3-4): checkpoints of an expected head, conflicts that say
which session and which heads, and ``update_session``, the load-apply-save retry helper."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import ConflictError, InvalidKeyError


async def test_a_checkpoint_with_expected_refuses_another_writers_state(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "s") as me, castate.StateManager(tmp_path / "s") as other:
        mine = await me.save_session("run", {"by": "me"})
        assert me.last_seen("run") == mine
        await other.load_session("run")
        theirs = await other.save_session("run", {"by": "other"})
        assert theirs is not None
        assert mine is not None
        with pytest.raises(ConflictError) as err:
            await me.create_checkpoint("run", "mine", expected=me.last_seen("run"))
        assert (err.value.session_id, err.value.expected, err.value.current) == ("run", mine, theirs)
        with pytest.raises(ConflictError):  # with metadata too
            await me.create_checkpoint("run", "mine", metadata={"a": 1}, expected=mine)
        assert await me.list_checkpoints("run") == []
        cp = await other.create_checkpoint("run", "theirs", expected=theirs)
        cp2 = await other.create_checkpoint("run", "theirs", metadata={"a": 1}, expected=bytes.fromhex(theirs))
        assert await me.restore_checkpoint(cp) == await me.restore_checkpoint(cp2) == {"by": "other"}
        with pytest.raises(InvalidKeyError):
            await me.create_checkpoint("run", "x", expected="not hex")


async def test_a_conflicting_save_names_the_session_and_both_heads(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "s") as a, castate.StateManager(tmp_path / "s") as b:
        first = await a.save_session("run", {"n": 1})
        await b.load_session("run")
        second = await b.save_session("run", {"n": 2})
        with pytest.raises(ConflictError) as err:
            await a.save_session("run", {"n": 3})
        e = err.value
        assert (e.session_id, e.expected, e.current) == ("run", first, second)
        assert first is not None
        assert second is not None
        for part in ("'run'", first[:12], second[:12], "update_session"):
            assert part in str(e)
        assert e.ref == "sessions/run"


async def test_a_save_of_a_session_another_writer_removed_reports_no_current_head(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "s") as a, castate.StateManager(tmp_path / "s") as b:
        first = await a.save_session("run", {"n": 1})
        await b.delete_session("run")
        with pytest.raises(ConflictError) as err:
            await a.save_session("run", {"n": 2})
        assert (err.value.expected, err.value.current) == (first, None)
        assert "found no session" in str(err.value)


async def test_update_session_reapplies_the_change_after_a_conflict(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "s") as a, castate.StateManager(tmp_path / "s") as b:
        await a.save_session("run", {"count": 0})
        calls: list[Any] = []

        async def bump(state: dict[str, Any] | None) -> dict[str, Any]:
            calls.append(state)
            if len(calls) == 1:  # another writer saves between this load and the save
                await b.update_session("run", lambda s: {"count": (s or {"count": 0})["count"] + 10})
            assert state is not None
            return {"count": state["count"] + 1}

        head = await a.update_session("run", bump)
        assert calls == [{"count": 0}, {"count": 10}]
        assert await a.load_session("run") == {"count": 11}
        assert head == a.last_seen("run")
        assert await a.update_session("fresh", lambda s: {"was": s}) is not None  # None: no session yet
        assert await a.load_session("fresh") == {"was": None}


async def test_update_session_gives_up_after_its_attempts(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "s") as a, castate.StateManager(tmp_path / "s") as b:
        await a.save_session("run", {"count": 0})
        tries = 0

        async def always_raced(state: dict[str, Any] | None) -> dict[str, Any]:
            nonlocal tries
            tries += 1
            await b.load_session("run")
            await b.save_session("run", {"count": -tries})
            return {"count": 1}

        with pytest.raises(ConflictError) as err:
            await a.update_session("run", always_raced, attempts=3)
        assert tries == 3
        assert err.value.session_id == "run"


async def test_concurrent_updates_through_one_manager_lose_nothing(tmp_path: Path) -> None:
    # one manager's saves of a session never conflict with each other, so its own concurrent
    # update_session calls must take turns, or one saves over a change it never loaded
    async with castate.StateManager(tmp_path / "s") as sm:

        async def bump(state: dict[str, Any] | None) -> dict[str, Any]:
            count = (state or {"count": 0})["count"]
            await asyncio.sleep(0)  # let the other tasks load the same state meanwhile
            return {"count": count + 1}

        await asyncio.gather(*(sm.update_session("run", bump) for _ in range(20)))
        assert await sm.load_session("run") == {"count": 20}


def _run(tmp_path: Path, body: Any) -> Any:
    async def main() -> Any:
        sm = castate.StateManager(castate.FileStorageBackend(tmp_path / "store"))
        try:
            return await body(sm)
        finally:
            await sm.close()

    return asyncio.run(main())


def test_update_session_does_not_overwrite_a_concurrent_save_of_the_same_manager(tmp_path: Path) -> None:
    """update_session loads head h1 and runs fn; meanwhile the same manager's save_session
    moves the head to h2 (acknowledged). update's save then builds on the repository's known
    head (h2, its own), so the compare-and-swap succeeds and h2's change is lost silently
    instead of fn running again on h2 (as it would for another writer's save)."""

    async def body(sm: castate.StateManager) -> Any:
        await sm.save_session("s", {"n": 0, "notes": []})
        loaded = asyncio.Event()
        go = asyncio.Event()

        async def fn(state: Any) -> Any:
            loaded.set()
            await go.wait()
            return {**state, "n": state["n"] + 1}

        update = asyncio.create_task(sm.update_session("s", fn))
        await loaded.wait()
        await sm.save_session("s", {"n": 0, "notes": ["acknowledged"]})  # returns a commit id
        go.set()
        await update
        final = await sm.load_session("s")
        assert final is not None
        assert final["notes"] == ["acknowledged"], final

    _run(tmp_path, body)


def test_update_session_creates_a_missing_url_store_as_save_session_does(tmp_path: Path) -> None:
    """update_session is a write (fn gets None for a new session), but it loads first through
    Repository.open() without create=True, so on a URL store not created yet it raises
    StoreNotFoundError where save_session would create the store."""
    url = f"sqlite:///{tmp_path}/store.db"  # absolute path: four slashes

    async def main() -> Any:
        sm = castate.StateManager(url)
        try:
            return await sm.update_session("s", lambda state: {"n": 1 if state is None else state["n"] + 1})
        finally:
            await sm.close()

    assert asyncio.run(main()) is not None
