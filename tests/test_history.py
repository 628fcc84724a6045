"""Naming commits (revisions), fork and restore into a session, and undoing a restore."""

from __future__ import annotations

import pytest

import castate
from castate.backends import MemoryBackend
from castate.errors import ConflictError, InvalidKeyError, NotFoundError
from castate.repository.revisions import resolve


@pytest.fixture
async def sm() -> castate.StateManager:
    manager = castate.StateManager(MemoryBackend())
    for step in range(4):
        await manager.save_session("run", {"step": step})
    return manager


async def test_revisions_name_heads_checkpoints_commits_and_ancestors(sm: castate.StateManager) -> None:
    repo = sm.repository
    cp = await sm.create_checkpoint("run", "mid")
    head = await repo.head("sessions/run")
    assert head is not None
    log = await repo.log("sessions/run")
    assert (await resolve(repo, "run")).commit == head
    assert (await resolve(repo, cp)).commit == head
    assert (await resolve(repo, f"checkpoint:{cp}")).session == "run"
    assert (await resolve(repo, head.hex())).commit == head
    assert (await resolve(repo, head.hex()[:10])).commit == head
    assert (await resolve(repo, "run~2")).commit == log[2][0]
    assert (await resolve(repo, "session:run~3")).commit == log[3][0]
    with pytest.raises(NotFoundError, match="only 3 earlier saves"):
        await resolve(repo, "run~4")
    with pytest.raises(NotFoundError):
        await resolve(repo, "nothing")
    with pytest.raises(NotFoundError):
        await resolve(repo, "session:nothing")
    with pytest.raises(InvalidKeyError):
        await resolve(repo, "")


async def test_fork_is_a_new_ref_and_writes_no_object(sm: castate.StateManager) -> None:
    cp = await sm.create_checkpoint("run", "base")
    backend = sm.repository.backend
    before = {i.id async for i in backend.iter_objects()}
    head = await sm.fork(cp, "run-2")
    assert {i.id async for i in backend.iter_objects()} == before
    assert await sm.load_session("run-2") == {"step": 3}
    assert head == (await sm.list_sessions())[0].head
    await sm.save_session("run-2", {"step": "forked"})
    assert await sm.load_session("run") == {"step": 3}
    with pytest.raises(ConflictError, match="already exists"):
        await sm.fork("run", "run-2")
    await sm.fork("run~3", "from-the-start")
    assert await sm.load_session("from-the-start") == {"step": 0}


async def test_restore_into_the_session_and_undo(sm: castate.StateManager) -> None:
    await sm.save_session("run", {"step": 1.5})
    cp = await sm.create_checkpoint("run", "good")
    await sm.save_session("run", {"step": "broken"})
    result = await sm.reset_session(to=cp)
    assert result.changed
    assert result.session_id == "run"
    assert await sm.load_session("run") == {"step": 1.5}
    entry = (await sm.repository.reflog("sessions/run"))[-1]
    assert entry.message.startswith("restore run to checkpoint")
    assert entry.new.hex() == result.current
    again = await sm.reset_session(to=cp)
    assert not again.changed
    undo = await sm.reset_session("run", to=result.previous)
    assert await sm.load_session("run") == {"step": "broken"}
    assert undo.previous == result.current
    # Saving after a restore continues from the restored state.
    await sm.reset_session(to=cp)
    await sm.save_session("run", {"step": 2})
    log = await sm.repository.log("sessions/run", 2)
    assert log[1][0].hex() == result.current


async def test_restore_into_session_is_the_old_name_of_reset_session_and_warns(sm: castate.StateManager) -> None:
    cp = await sm.create_checkpoint("run", "good")
    await sm.save_session("run", {"step": "broken"})
    with pytest.warns(DeprecationWarning, match=r"reset_session\(session_id, to=source\)") as caught:
        result = await sm.restore_into_session(cp)  # the old (source, session_id) order
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert (result.session_id, result.changed) == ("run", True)
    assert await sm.load_session("run") == {"step": 3}
    with pytest.warns(DeprecationWarning, match="reset_session"), pytest.raises(ConflictError):
        await sm.restore_into_session(result.previous, "run", expected=result.previous)  # keywords still pass


async def test_restore_into_another_session(sm: castate.StateManager) -> None:
    cp = await sm.create_checkpoint("run", "x")
    await sm.reset_session("elsewhere", to=cp)
    assert await sm.load_session("elsewhere") == {"step": 3}
    head = (await sm.repository.head("sessions/run")).hex()
    with pytest.raises(NotFoundError):
        await sm.reset_session("run", to="nope")
    commit_only = castate.StateManager(MemoryBackend())
    with pytest.raises(NotFoundError):
        await commit_only.reset_session(to=head)
