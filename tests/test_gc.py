"""gc: what it keeps (refs, recent reflog entries, recent objects and what they point at),
what it deletes (the rest, once older than the grace period), and when it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import CorruptionError
from castate.repository.gc import collect_garbage
from castate.repository.snapshot import fetch_tree
from tests.memory_objects import MemoryObjects


def big_state(tag: str, n: int = 300) -> dict[str, Any]:
    return {"owner": tag, "messages": [{"i": i, "text": f"{tag} message {i} " * 20} for i in range(n)]}


async def object_ids(backend: castate.Backend) -> set[bytes]:
    return {info.id async for info in backend.iter_objects()}


async def tree_ids(sm: castate.StateManager, session: str) -> set[bytes]:
    repo = sm.repository
    commit = await repo.resolve(f"sessions/{session}")
    return set(await fetch_tree(repo.backend, commit.root))


@pytest.fixture
async def sm(store_path: Path) -> Any:
    manager = castate.StateManager(castate.LocalBackend(store_path))
    await manager.repository.open()
    yield manager
    await manager.close()


async def test_gc_frees_a_removed_session_and_keeps_the_others(sm: castate.StateManager) -> None:
    await sm.save_session("keep", big_state("keep"))
    await sm.save_session("drop", big_state("drop"))
    keep_ids = await tree_ids(sm, "keep")
    drop_ids = await tree_ids(sm, "drop")
    await sm.delete_session("drop")
    report = await sm.gc(grace=0, reflog_expire=0)
    assert report.deleted == len(drop_ids - keep_ids) + 1  # its tree and its commit
    assert report.deleted_bytes > 0
    assert report.left == 0
    assert report.store_bytes_after is not None
    assert report.store_bytes_before is not None
    assert report.store_bytes_after < report.store_bytes_before
    left = await object_ids(sm.repository.backend)
    assert keep_ids <= left
    assert not (drop_ids - keep_ids) & left
    assert await sm.load_session("keep") == big_state("keep")
    assert (await sm.fsck(full=True)).ok


async def test_the_reflog_keeps_removed_sessions_until_it_expires(sm: castate.StateManager) -> None:
    await sm.save_session("s", big_state("s"))
    head = (await sm.list_sessions())[0].head
    await sm.delete_session("s")
    report = await sm.gc(grace=0)  # default reflog expiry: days
    assert report.deleted == 0
    restored = await sm.reset_session("s", to=head)  # undo the removal
    assert restored.current == head
    assert restored.previous is None
    assert await sm.load_session("s") == big_state("s")


async def test_dry_run_deletes_nothing(sm: castate.StateManager) -> None:
    await sm.save_session("s", big_state("s"))
    await sm.delete_session("s")
    before = await object_ids(sm.repository.backend)
    report = await sm.gc(grace=0, reflog_expire=0, dry_run=True)
    assert report.dry_run
    assert report.deleted == len(before)
    assert await object_ids(sm.repository.backend) == before
    assert len(await sm.repository.reflog()) > 0  # not expired either


async def test_grace_period_keeps_young_unreachable_objects(sm: castate.StateManager) -> None:
    await sm.save_session("s", big_state("s"))
    await sm.delete_session("s")
    report = await sm.gc(grace=3600, reflog_expire=0)
    assert report.deleted == 0
    assert report.recent == report.objects
    report = await sm.gc(grace=0, reflog_expire=0)
    assert report.deleted == report.objects


async def test_history_beyond_the_reflog_goes_but_checkpoints_stay() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    for step in range(5):
        await sm.save_session("s", big_state(f"v{step}", 50))
        if step == 1:
            cp = await sm.create_checkpoint("s", "early")
    assert len(await sm.repository.log("sessions/s")) == 5
    report = await sm.gc(grace=0, reflog_expire=0)
    assert report.deleted > 0
    log = await castate.StateManager(backend).repository.log("sessions/s")  # another process
    assert len(log) == 1
    assert log[0][1].parents
    assert await sm.restore_checkpoint(cp) == big_state("v1", 50)
    assert await sm.load_session("s") == big_state("v4", 50)
    assert (await sm.fsck(full=True)).ok


async def test_recent_objects_keep_what_they_point_at() -> None:
    """An old unreachable object that a recent (not yet referenced) tree uses is kept."""
    backend = MemoryObjects()
    repo = castate.Repository(backend)
    old = await repo.save("sessions/old", {"doc": "shared text " * 400})
    await repo.delete_refs(["sessions/old"])
    for oid, (frame, _) in list(backend._objects.items()):
        backend._objects[oid] = (frame, 1)  # written long ago
    blob = next(iter(set(await fetch_tree(backend, old.root)) - {old.root}))
    # A recent tree that reuses the blob, written without a ref (a save in progress).
    young = castate.Repository(backend)
    new = await young.save("sessions/young", {"doc": "shared text " * 400, "more": 1})
    await young.delete_refs(["sessions/young"])
    await collect_garbage(backend, grace=60, reflog_expire=0)
    have = await object_ids(backend)
    assert blob in have
    assert new.root in have
    assert old.root not in have
    assert old.commit not in have


async def test_gc_refuses_when_a_reachable_object_is_missing() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    await sm.save_session("s", big_state("s"))
    await sm.save_session("garbage", big_state("g"))
    await sm.delete_session("garbage")
    root = (await sm.repository.resolve("sessions/s")).root
    await backend.delete_objects([root])
    before = await object_ids(backend)
    with pytest.raises(CorruptionError, match="fsck"):
        await collect_garbage(backend, grace=0, reflog_expire=0)
    assert await object_ids(backend) == before


async def test_gc_expires_old_reflog_entries(sm: castate.StateManager) -> None:
    for i in range(3):
        await sm.save_session("s", {"i": i})
    report = await sm.gc(grace=0, reflog_expire=0)
    assert report.reflog_expired == 3
    assert await sm.repository.reflog() == []
    assert await sm.load_session("s") == {"i": 2}
