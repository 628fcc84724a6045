"""Short references in the sessions API: ``restore_checkpoint``, ``diff``, ``fork`` and
``reset_session`` take what the CLI takes (castate/repository/refspec.py), not only
76-character checkpoint ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import InvalidKeyError, NotFoundError
from castate.repository.refspec import short_checkpoint_ids


@pytest.fixture
async def history(manager: castate.StateManager) -> dict[str, Any]:
    """run-1: v1, checkpoint before_call (cp1), v2, before_call again (cp2), v3, other (cp3), v4."""
    out: dict[str, Any] = {"commits": []}
    for v in (1, 2, 3, 4):
        out["commits"].append(await manager.save_session("run-1", {"v": v, "log": list(range(v))}))
        if v == 1:
            out["cp1"] = await manager.create_checkpoint("run-1", "before_call")
        if v == 2:
            out["cp2"] = await manager.create_checkpoint("run-1", "before_call")
        if v == 3:
            out["cp3"] = await manager.create_checkpoint("run-1", "other")
    return out


def v(n: int) -> dict[str, Any]:
    return {"v": n, "log": list(range(n))}


async def test_restore_checkpoint_takes_short_references(manager: castate.StateManager, history) -> None:
    assert await manager.restore_checkpoint(history["cp1"]) == v(1)  # the full id, as before
    assert await manager.restore_checkpoint("run-1@before_call") == v(2)  # the newest of that name
    assert await manager.restore_checkpoint("run-1/other") == v(3)  # the only one of that name
    shorts = short_checkpoint_ids([history["cp1"], history["cp2"], history["cp3"]])
    assert shorts[history["cp3"]] == "run-1/other"
    assert await manager.restore_checkpoint(shorts[history["cp1"]]) == v(1)  # name plus enough of the stamp
    assert await manager.restore_checkpoint(shorts[history["cp2"]]) == v(2)
    assert await manager.load_session("run-1") == v(4)  # restoring never moves the session


async def test_restore_checkpoint_takes_commits_and_ancestors(manager: castate.StateManager, history) -> None:
    first, second, third, _ = history["commits"]
    assert await manager.restore_checkpoint(first) == v(1)  # a full commit id
    assert await manager.restore_checkpoint(second[:8]) == v(2)  # a unique prefix
    assert await manager.restore_checkpoint(f"commit:{third[:10]}") == v(3)
    assert await manager.restore_checkpoint("run-1~1") == v(3)
    assert await manager.restore_checkpoint("run-1~") == v(3)
    assert await manager.restore_checkpoint("run-1~3") == v(1)
    assert await manager.restore_checkpoint("run-1@before_call~1") == v(1)  # the save before that checkpoint
    assert await manager.restore_checkpoint("run-1") == v(4)  # a session: its head


async def test_restore_checkpoint_says_what_a_reference_misses(manager: castate.StateManager, history) -> None:
    with pytest.raises(InvalidKeyError, match=r"names 2 checkpoints.*run-1@before_call for the newest"):
        await manager.restore_checkpoint("run-1/before_call")
    with pytest.raises(InvalidKeyError, match="session 'run-1' has no checkpoint 'missing'"):
        await manager.restore_checkpoint("run-1@missing")
    with pytest.raises(InvalidKeyError, match="only 3 earlier saves"):
        await manager.restore_checkpoint("run-1~5")
    with pytest.raises(NotFoundError, match="no checkpoint"):  # a well-formed id: NotFoundError, as before
        await manager.restore_checkpoint("run-1/missing/20240101T000000.000000Z-abcdef")
    with pytest.raises(InvalidKeyError, match="no session, checkpoint or commit named 'nothing-here'"):
        await manager.restore_checkpoint("nothing-here")


async def test_diff_fork_and_reset_session_take_short_references(manager: castate.StateManager, history) -> None:
    changes = await manager.diff("run-1@before_call", "run-1/other")
    assert [(c.op, c.path) for c in changes] == [("replace", "/v"), ("add", "/log/2")]
    assert await manager.diff("run-1~1", "run-1@other") == []
    await manager.fork("run-1@before_call~1", "retry")
    assert await manager.load_session("retry") == v(1)
    result = await manager.reset_session(to="run-1/other")
    assert (result.session_id, result.changed) == ("run-1", True)
    assert await manager.load_session("run-1") == v(3)
    await manager.reset_session("run-1", to=result.previous[:10])  # undo by a commit prefix
    assert await manager.load_session("run-1") == v(4)


def test_the_sync_api_takes_the_same_references(store_path: Path) -> None:
    with castate.SyncStateManager(store_path) as sm:
        sm.save_session("s", {"n": 1})
        sm.create_checkpoint("s", "first")
        sm.save_session("s", {"n": 2})
        assert sm.restore_checkpoint("s@first") == {"n": 1}
        assert sm.restore_checkpoint("s~1") == {"n": 1}
        assert sm.resolve("s/first").session == "s"


async def test_an_ancestor_reference_with_a_trailing_newline_names_nothing(tmp_path: Path) -> None:
    """``~N`` is matched on the whole text: 'run-1~1\\n' is another name, not run-1~1."""
    async with castate.StateManager(tmp_path / "store") as sm:
        await sm.save_session("run-1", {"v": 1})
        await sm.save_session("run-1", {"v": 2})
        with pytest.raises((NotFoundError, InvalidKeyError)):
            await sm.restore_checkpoint("run-1~1\n")
        with pytest.raises((NotFoundError, InvalidKeyError)):
            await sm.restore_checkpoint("run-1~\u0661")  # an Arabic-Indic digit is not a count


async def test_an_ancestor_count_of_thousands_of_digits_is_a_reference_error(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "store") as sm:
        await sm.save_session("run-1", {"v": 1})
        with pytest.raises((NotFoundError, InvalidKeyError)):
            await sm.restore_checkpoint("run-1~" + "9" * 5000)
