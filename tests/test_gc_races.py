"""Races between gc and the calls that point a ref at an existing commit (issue 16, items 1-2).

Each race is forced, not hoped for: a repository whose hook runs inside the call under test
(while it reads the head, or just before its ref moves) makes another writer save and then
runs gc with no grace and no reflog. Where the call holds gc's shared lock as it must, that
gc cannot get its exclusive lock: it gives up after the short lock timeout of its store,
and the checkpoint stays whole. Without the lock, gc collects the tree and the checkpoint
(or fork) names a state that cannot be read. The forced races run on encrypted stores too
(tests/encrypted_support.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.autocheckpoint import AutoCheckpointer
from castate.backends.base import Backend, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.local.locks import FileLock
from castate.backends.sqlite import SQLiteBackend
from castate.codec import Commit
from castate.errors import MissingObjectError, StoreError
from castate.repository import refs as names
from tests.encrypted_support import ENCRYPTION, env_key, is_encrypted, use_encryption

LOCK_TIMEOUT = 1.0  # seconds gc waits for its lock in the forced races before giving up


def open_backend(kind: str, path: Path, lock_timeout: float = 60.0) -> Backend | BlobBackend:
    if kind == "local":
        backend: BlobBackend = castate.LocalBackend(path / "state", lock_timeout=lock_timeout)
    else:
        backend = SQLiteBackend(path / "state.db", lock_timeout=lock_timeout)
    backend.secret = env_key()  # CASTATE_KEY: the store is made encrypted
    return backend


def state(tag: str) -> dict[str, Any]:
    return {"tag": tag, "notes": {f"k{i}": f"{tag} value {i} " * 20 for i in range(40)}, "steps": list(range(300))}


class HookedRepository(castate.Repository):
    """A repository that runs ``hook`` once, at the first read of ``commit`` or the first ref move."""

    def __init__(self, backend: Backend | BlobBackend) -> None:
        super().__init__(backend)
        self.on_read: tuple[bytes, Callable[[], Awaitable[None]]] | None = None
        self.on_move: Callable[[], Awaitable[None]] | None = None

    async def read_commits(self, cids: Sequence[bytes]) -> dict[bytes, Commit]:
        if self.on_read is not None and self.on_read[0] in cids:
            hook, self.on_read = self.on_read[1], None
            await hook()
        return await super().read_commits(cids)

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        if self.on_move is not None:
            hook, self.on_move = self.on_move, None
            await hook()
        await super().update_refs(updates, message=message)


async def other_writer_then_gc(kind: str, path: Path, session: str, outcome: list[str]) -> None:
    """Another process's save moves the session on; then gc with no grace tries to collect."""
    async with castate.StateManager(open_backend(kind, path, LOCK_TIMEOUT)) as other:
        await other.load_session(session)
        await other.save_session(session, state("newer"))
        try:
            report = await other.gc(grace=0, reflog_expire=0)
        except StoreError:
            outcome.append("gc waited for the checkpoint")  # the shared lock held it off
        else:
            outcome.append(f"gc deleted {report.deleted}")


async def seed(kind: str, path: Path, session: str) -> str:
    async with castate.StateManager(open_backend(kind, path)) as sm:
        head = await sm.save_session(session, state("older"))
    assert head is not None
    store = path / "state" if kind == "local" else f"sqlite:///{path / 'state.db'}"
    assert await is_encrypted(store) == (env_key() is not None)
    return head


@ENCRYPTION
@pytest.mark.parametrize("kind", ["local", "sqlite"])
async def test_a_checkpoint_with_metadata_keeps_its_state_when_gc_runs_during_it(
    kind: str, tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    head = await seed(kind, tmp_path, "s")
    repo = HookedRepository(open_backend(kind, tmp_path))
    outcome: list[str] = []
    repo.on_read = (bytes.fromhex(head), lambda: other_writer_then_gc(kind, tmp_path, "s", outcome))
    async with castate.StateManager(repo) as sm:
        cp = await sm.create_checkpoint("s", "before", metadata={"why": "test"})
        assert await sm.restore_checkpoint(cp) == state("older")  # before the fix: MissingObjectError
        assert outcome == ["gc waited for the checkpoint"]
        (info,) = await sm.list_checkpoints("s")
        assert info.metadata == {"why": "test"}
        report = await sm.gc(grace=0, reflog_expire=0)  # now it runs, and keeps the checkpoint's tree
        assert not report.warnings
        assert await sm.restore_checkpoint(cp) == state("older")
        assert (await sm.fsck(full=True)).ok


@ENCRYPTION
@pytest.mark.parametrize("kind", ["local", "sqlite"])
async def test_an_automatic_checkpoint_keeps_its_state_when_gc_runs_before_its_ref_moves(
    kind: str, tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    await seed(kind, tmp_path, "s")
    repo = HookedRepository(open_backend(kind, tmp_path))
    outcome: list[str] = []
    repo.on_move = lambda: other_writer_then_gc(kind, tmp_path, "s", outcome)
    async with castate.StateManager(repo, auto_checkpoint=castate.AutoCheckpoint(every_saves=1)) as sm:
        await sm.load_session("s")
        await sm.save_session("s", state("mine"))  # checkpointed automatically; the hook runs first
        (info,) = await sm.list_checkpoints("s")
        assert await sm.restore_checkpoint(info.checkpoint_id) == state("mine")  # before: MissingObjectError
        assert outcome == ["gc waited for the checkpoint"]
        await sm.gc(grace=0, reflog_expire=0)
        assert await sm.restore_checkpoint(info.checkpoint_id) == state("mine")
        assert (await sm.fsck(full=True)).ok


async def partly_collected(sm: castate.StateManager) -> tuple[str, bytes]:
    """A commit no ref holds whose commit and root are stored but one object below is gone."""
    old = await sm.save_session("s", state("older"))
    assert old is not None
    await sm.save_session("s", state("newer"))
    repo = sm.repository
    root = (await repo.read_commit(bytes.fromhex(old))).root
    gone = next(o for o in await tree_ids(repo, root) if o != root)
    await repo.backend.delete_objects([gone])
    assert await repo.backend.has_objects([bytes.fromhex(old), root]) == {bytes.fromhex(old), root}
    assert not await repo.backend.has_objects([gone])
    return old, gone


async def tree_ids(repo: castate.Repository, root: bytes) -> list[bytes]:
    from castate.repository.walk import Walker

    walker = Walker(repo.backend)
    await walker.walk([root])
    return list(walker.kinds)


async def test_fork_and_restore_refuse_a_commit_whose_tree_gc_partly_removed(tmp_path: Path) -> None:
    async with castate.StateManager(castate.LocalBackend(tmp_path / "state")) as sm:
        old, gone = await partly_collected(sm)
        with pytest.raises(MissingObjectError) as err:
            await sm.fork(old, "revived")
        assert err.value.object_id == gone.hex()
        assert await sm.load_session("revived") is None
        with pytest.raises(MissingObjectError):
            await sm.reset_session("s", to=old)
        assert await sm.load_session("s") == state("newer")


async def test_an_automatic_checkpoint_refuses_a_commit_another_writer_left_partly_collected(
    tmp_path: Path,
) -> None:
    async with castate.StateManager(castate.LocalBackend(tmp_path / "state")) as sm:
        old, _ = await partly_collected(sm)
        checkpointer = AutoCheckpointer(castate.AutoCheckpoint(every_saves=1))
        with pytest.raises(MissingObjectError):
            await checkpointer.checkpoint(sm.repository, "s", bytes.fromhex(old), ["test"])
        assert await sm.list_checkpoints("s") == []


@ENCRYPTION
@pytest.mark.parametrize("kind", ["local", "sqlite"])
async def test_a_commit_inside_gc_shared_does_not_queue_behind_a_waiting_gc(
    kind: str, tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that holds gc's shared lock (an import, a checkpoint) and then saves must not
    ask for the lock again: a gc waiting for the exclusive side holds the turnstile, so the
    second request would wait for gc, which waits for the first: stuck until the timeout."""
    use_encryption(monkeypatch, encrypted)
    await seed(kind, tmp_path, "s")
    turnstile = tmp_path / "state" / "locks" / "gc.turnstile" if kind == "local" else tmp_path / "state.db-gcturn"
    async with castate.Repository(open_backend(kind, tmp_path, LOCK_TIMEOUT)) as repo:
        async with castate.Repository(open_backend(kind, tmp_path)) as gc_repo:
            async with repo.backend.gc_shared():
                entered = asyncio.Event()

                async def gc() -> None:
                    async with gc_repo.backend.gc_exclusive():
                        entered.set()

                gc_task = asyncio.create_task(gc())
                probe = FileLock(turnstile, 0)
                try:
                    while True:  # until gc waits for its lock, holding the turnstile
                        with probe.hold(exclusive=False, blocking=False) as free:
                            if not free:
                                break
                        await asyncio.sleep(0.01)
                finally:
                    probe.close()
                assert not entered.is_set()
                await repo.save(names.session_ref("t"), state("inside"))  # before the fix: StoreError
            await gc_task
            assert entered.is_set()
        assert await repo.load(names.session_ref("t")) == state("inside")


async def test_a_commit_inside_gc_shared_does_not_queue_behind_a_waiting_gc_on_postgresql(postgres_url: str) -> None:
    """The same on PostgreSQL: a shared advisory lock asked for while an exclusive request
    waits queues behind it, and the server cannot see that the waiter waits for this client."""
    import psycopg

    from castate.backends.postgres import PostgresBackend

    async with castate.Repository(PostgresBackend(postgres_url, lock_timeout=LOCK_TIMEOUT)) as repo:
        async with castate.Repository(PostgresBackend(postgres_url)) as gc_repo:
            backend = gc_repo.backend.blobs  # type: ignore[attr-defined]
            assert isinstance(backend, PostgresBackend)
            async with repo.backend.gc_shared():
                entered = asyncio.Event()

                async def gc() -> None:
                    async with gc_repo.backend.gc_exclusive():
                        entered.set()

                gc_task = asyncio.create_task(gc())
                async with await psycopg.AsyncConnection.connect(backend.conninfo) as probe:
                    while True:  # until gc's exclusive request waits on the server
                        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        row = await (await probe.execute(query)).fetchone()
                        if row is not None and row[0] > 0:
                            break
                        await asyncio.sleep(0.01)
                assert not entered.is_set()
                await repo.save(names.session_ref("t"), state("inside"))  # before the fix: StoreError
            await gc_task
            assert entered.is_set()
        assert await repo.load(names.session_ref("t")) == state("inside")
