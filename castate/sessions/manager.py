"""StateManager: sessions and checkpoints of workflow state.

Over a castate store (``FileStorageBackend``, a ``Backend`` or a path) a session is a
ref to its latest commit, a save writes only what changed, and a checkpoint is a new
ref to the session's current commit: O(1), never a copy. Over any other object with
the dict storage interface it still works, by storing plain dict copies. The two are
storage strategies (``_RepoSessions``, ``_PlainSessions``) chosen once when the manager is
built; what only a castate store can do (history, diff, fork, pause, gc, ...) goes through
``StateManager.repository``, which says so over plain storage.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from castate.errors import (
    AlreadyExistsError,
    CastateError,
    ConflictError,
    InvalidKeyError,
    MissingObjectError,
    NotFoundError,
)
from castate.keys import Secret
from castate.repository import Backend, BlobBackend, Default, RefRepairReport, Repository
from castate.repository import refs as names
from castate.repository.bundle import BundleProgress, BundleReport, export_session, import_bundle
from castate.repository.diff import Change
from castate.repository.fsck import FsckProgress, FsckReport, fsck
from castate.repository.gc import DEFAULT_GRACE, DEFAULT_REFLOG_EXPIRE, GcProgress, GcReport, collect_garbage
from castate.repository.health import fsck_run, gc_run, record_run
from castate.repository.moved import moved_ns
from castate.repository.recover import Rollback, roll_back
from castate.repository.retention import ForgetReport, Policy, forget
from castate.repository.revisions import Revision, resolve
from castate.repository.stats import StoreStats, store_stats
from castate.sessions import lifecycle
from castate.sessions.auto import AutoCheckpoint, AutoCheckpointer
from castate.sessions.storage import FileStorageBackend, StorageBackend

UPDATE_ATTEMPTS = 10  # update_session: tries before a conflict propagates
UPDATE_BACKOFF = 0.01  # seconds: the first backoff's bound, doubled after each conflict
UPDATE_BACKOFF_MAX = 1.0


class _Record(Mapping[str, Any]):
    """Read-only record with attribute and item access (``r.session_id`` and ``r["session_id"]``)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # every record is a dataclass (for fields() below)

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._names()}


@dataclass(frozen=True, eq=True)
class SessionInfo(_Record):
    """One session: its id, ``timestamp`` (epoch seconds), its checkpoint count, its head
    commit (hex) and the head's metadata.

    ``timestamp`` is when the session's head last moved: its last save, or a later
    ``reset_session``, ``fork`` (for the new session) or import, which point the head at an
    older save (the reflog says when; past its expiry, the head's save time, older either
    way). The time the head's state was saved is ``history(session_id, limit=1)[0].timestamp``.
    It is what ``castate sessions`` prints as UPDATED and what retention's ``forget
    --sessions`` ages a session by. Over plain dict storage: the last ``save_session``."""

    session_id: str
    timestamp: float
    checkpoint_count: int
    head: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        return bool(self.metadata.get("paused", False))


@dataclass(frozen=True, eq=True)
class CheckpointInfo(_Record):
    """One checkpoint: its id, session, name, creation time (epoch seconds) and commit."""

    checkpoint_id: str
    session_id: str
    name: str
    timestamp: float
    commit: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=True)
class SaveInfo(_Record):
    """One save in a session's history: its commit and first parent (hex; None for the first
    save), time (epoch seconds), name (None for a plain save; ``pause``, ``resume`` or a
    checkpoint's name for commits those made) and metadata."""

    commit: str
    parent: str | None
    timestamp: float
    name: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=True)
class RestoreResult(_Record):
    """What ``reset_session`` did: the session's head before (None if it had none) and after, as hex ids."""

    session_id: str
    previous: str | None
    current: str
    changed: bool


RESTORE_INTO_SESSION_DEPRECATED = (
    "restore_into_session(source, session_id) is deprecated: call reset_session(session_id, to=source), "
    "which moves the session the same way"
)


class StateManager:
    """Save, load, checkpoint and restore session states."""

    def __init__(
        self,
        storage_backend: StorageBackend | Backend | BlobBackend | str | os.PathLike[str] | None = None,
        *,
        default: Default | None = None,
        auto_checkpoint: AutoCheckpoint | None = None,
        key: Secret | None = None,
    ) -> None:
        if storage_backend is None:
            storage_backend = "./state"
        if isinstance(storage_backend, str | os.PathLike):
            storage_backend = FileStorageBackend(storage_backend, default=default, key=key)
        elif key is not None:
            raise TypeError("key= goes with a path or URL; a store object takes it where it is made (castate.open)")
        self.storage = storage_backend
        self.default = default
        # The one storage strategy, chosen here: commits and refs on a castate repository, or
        # plain dict copies over any other object with the dict storage interface.
        self._store: _RepoSessions | _PlainSessions
        if isinstance(storage_backend, FileStorageBackend):
            self._store = _RepoSessions(storage_backend.repository)
            self.default = default if default is not None else storage_backend.default
        elif isinstance(storage_backend, Backend | BlobBackend):
            self._store = _RepoSessions(Repository(storage_backend))
        elif isinstance(storage_backend, Repository):
            self._store = _RepoSessions(storage_backend)
        else:
            self._store = _PlainSessions(storage_backend)
        # update_session's per-session turns; a lock no update holds or awaits drops out
        self._update_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._save_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.auto_checkpointer: AutoCheckpointer | None = None
        if auto_checkpoint is not None:
            if self._store.repo is None:
                raise TypeError("auto_checkpoint needs a castate store (a path, FileStorageBackend or Backend)")
            self.auto_checkpointer = AutoCheckpointer(auto_checkpoint)

    @property
    def repository(self) -> Repository:
        """The castate repository underneath (only when the storage is a castate store)."""
        if self._store.repo is None:
            raise TypeError("this StateManager stores plain dict copies; it has no castate repository")
        return self._store.repo

    async def close(self) -> None:
        await self._store.close()

    async def __aenter__(self) -> StateManager:
        await self._store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sessions ----------------------------------------------------------------------------

    async def save_session(
        self, session_id: str, state: dict[str, Any], *, metadata: dict[str, Any] | None = None
    ) -> str | None:
        """Save ``state`` as the session's current state; returns the commit id (hex).

        Raises ConflictError when another writer saved this session since this manager last
        read or wrote it; load it again to continue from that state.
        """
        async with self._lock(self._save_locks, session_id):
            return await self._save_unlocked(session_id, state, metadata)

    async def _save_unlocked(
        self, session_id: str, state: dict[str, Any], metadata: dict[str, Any] | None
    ) -> str | None:
        commit = await self._store.save(session_id, state, metadata, self.default)
        if commit is None:
            return None
        if self.auto_checkpointer is not None:
            reasons = self.auto_checkpointer.due(session_id, state)
            if reasons:
                await self.auto_checkpointer.checkpoint(self.repository, session_id, commit, reasons)
        return commit.hex()

    async def update_session(
        self,
        session_id: str,
        fn: Callable[[dict[str, Any] | None], dict[str, Any] | Awaitable[dict[str, Any]]],
        *,
        metadata: dict[str, Any] | None = None,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> str | None:
        """Load the session, apply ``fn`` and save its result, again while other writers win.

        ``fn`` gets the current state (None when the session does not exist yet) and returns
        the new state (it may be a coroutine function); it can run several times, each time
        on the newest state, so it should not have side effects beyond computing the state.
        After a conflict it waits a random backoff (doubling from ``UPDATE_BACKOFF`` up to
        ``UPDATE_BACKOFF_MAX`` seconds) before trying again; after ``attempts`` conflicts the
        last ConflictError propagates. Returns the commit id (hex) as ``save_session`` does.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        # This manager's saves of a session take turns without conflicting (each builds on the
        # one before), so its own concurrent updates (tasks, SyncStateManager's threads) go one
        # at a time, and an update saves only if no save of this manager moved the session
        # since its load (checked under the lock saves take): else it would save over a change
        # ``fn`` never saw. Then ``fn`` runs again, on that state.
        async with self._lock(self._update_locks, session_id):
            await self._store.open_for_write()
            delay = UPDATE_BACKOFF
            conflicts = 0
            while True:
                state = await self.load_session(session_id)
                seen = self.last_seen(session_id)
                new = fn(state)
                if inspect.isawaitable(new):
                    new = await new
                async with self._lock(self._save_locks, session_id):
                    if self.last_seen(session_id) != seen:
                        continue
                    try:
                        return await self._save_unlocked(session_id, new, metadata)
                    except ConflictError:
                        conflicts += 1
                        if conflicts == attempts:
                            raise
                await asyncio.sleep(random.uniform(0, delay))  # jitter: writers that collided do not retry in step
                delay = min(delay * 2, UPDATE_BACKOFF_MAX)

    @staticmethod
    def _lock(table: weakref.WeakValueDictionary[str, asyncio.Lock], session_id: str) -> asyncio.Lock:
        lock = table.get(session_id)
        if lock is None:
            lock = table[session_id] = asyncio.Lock()
        return lock

    def last_seen(self, session_id: str) -> str | None:
        """The head (commit id, hex) this manager last saved or loaded for the session, or None.

        No I/O. Pass it as ``create_checkpoint(..., expected=...)`` to checkpoint exactly the
        state this writer worked on, not whatever another writer saved since.
        """
        return self._store.last_seen(session_id)

    async def load_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's current state, or None when there is no such session."""
        state = await self._store.load(session_id)
        if self.auto_checkpointer is not None:
            self.auto_checkpointer.observe(session_id, state)
        return state

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session, sorted by id."""
        return await self._store.list_sessions()

    async def delete_session(self, session_id: str) -> int:
        """Delete the session and its checkpoints (refs only; gc frees the bytes). Returns how many
        refs were removed (keys, over the dict storage interface): 0 when there was no such session."""
        return await self._store.delete(session_id)

    # -- checkpoints -----------------------------------------------------------------------------

    async def create_checkpoint(
        self,
        session_id: str,
        name: str | None = None,
        *,
        checkpoint_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        expected: str | bytes | None = None,
    ) -> str:
        """Checkpoint the session's current state; returns the checkpoint id. O(1): a new ref.

        ``checkpoint_name`` is the old spelling of ``name``, deprecated (a DeprecationWarning).

        ``expected`` (a commit id, hex as ``save_session`` and ``last_seen`` return it, or
        bytes): checkpoint only if that is still the session's head, else ConflictError
        naming both heads. On a session other writers save too, pass it: without it the
        checkpoint holds whatever state is current, possibly another writer's.
        """
        if checkpoint_name is not None:
            warnings.warn(
                "create_checkpoint(checkpoint_name=...) is deprecated: pass name= (or the name as the second argument)",
                DeprecationWarning,
                stacklevel=2,
            )
        if name is not None and checkpoint_name is not None and name != checkpoint_name:
            raise ValueError("pass the checkpoint name once: name= or checkpoint_name=")
        label = name if name is not None else checkpoint_name if checkpoint_name is not None else "checkpoint"
        names.check_name(label, "checkpoint name")
        want = _commit_id(expected) if expected is not None else None
        return await self._store.checkpoint(session_id, label, metadata, want)

    async def restore_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """The state saved in a checkpoint (the session itself is not changed).

        ``checkpoint_id``: the id ``create_checkpoint`` returned, or on a castate store any
        reference (``castate.repository.refspec``): ``run-1@before_call`` (the newest
        checkpoint of that name), ``run-1/before_call`` (the only one of that name), a commit
        id or unique prefix, ``REF~N`` (N saves before REF); a session id gives its head's
        state. NotFoundError for a checkpoint id that names nothing, InvalidKeyError for text
        that is no checkpoint id and names nothing, or names several things.
        """
        return await self._store.restore(checkpoint_id)

    async def list_checkpoints(self, session_id: str) -> list[CheckpointInfo]:
        """The session's checkpoints, newest first."""
        return await self._store.list_checkpoints(session_id)

    # -- lifecycle (castate/lifecycle.py) ----------------------------------------------------------

    def checkpointed(
        self, session_id: str, name: str = "checkpointed", *, metadata: dict[str, Any] | None = None
    ) -> AbstractAsyncContextManager[str]:
        """``async with sm.checkpointed(sid, name) as cp:`` checkpoints on entry; if the block raises,
        the session's head moves back to that checkpoint (recorded in the reflog) and the error
        propagates."""
        return lifecycle.checkpointed(self, self.repository, session_id, name, metadata)

    async def pause_session(self, session_id: str, *, reason: str | None = None) -> str:
        """Mark the session paused, with the time (and ``reason``), in the store; returns the head commit.

        Saves keep the session paused until ``resume_session``. Pausing a paused session is a no-op.
        """
        return await lifecycle.pause(self.repository, session_id, reason)

    async def resume_session(self, session_id: str) -> dict[str, Any]:
        """Mark the session resumed (with the time) in the store; returns its state to continue from."""
        await lifecycle.resume(self.repository, session_id)
        state = await self.load_session(session_id)
        if state is None:
            raise NotFoundError(f"no session {session_id!r}")
        return state

    # -- history: diff, fork, restore ------------------------------------------------------

    async def history(self, session_id: str, *, limit: int = 50, before: str | None = None) -> list[SaveInfo]:
        """The session's saves, newest first, at most ``limit``: a page. For the next page pass
        ``before=page[-1].commit`` (any reference works: the saves before the one it names).

        Follows first parents from the head; it ends early where gc removed older saves (the
        last entry's ``parent`` is then still set). NotFoundError when there is no such session.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        repo = self.repository
        if before is None:
            start: bytes | None = await repo.head(names.session_ref(session_id))
            if start is None:
                raise NotFoundError(f"no session {session_id!r}")
        else:
            first = await repo.read_commit((await self.resolve(before)).commit)
            start = first.parents[0] if first.parents else None
        out: list[SaveInfo] = []
        cid = start
        while cid is not None and len(out) < limit:
            try:
                commit = await repo.read_commit(cid)
            except MissingObjectError:
                if not out and before is None:
                    raise
                break  # gc removed the saves from here on
            parent = commit.parents[0] if commit.parents else None
            out.append(
                SaveInfo(
                    cid.hex(), parent.hex() if parent else None, commit.time_ns / 1e9, commit.name, dict(commit.meta)
                )
            )
            cid = parent
        return out

    async def resolve(self, revision: str) -> Revision:
        """The commit a reference names: a session id, checkpoint id, ``SESSION@NAME``,
        ``SESSION/NAME``, a commit id or unique prefix, any of them ``~N`` (the grammar:
        ``castate.repository.refspec``)."""
        return await resolve(self.repository, revision)

    async def diff(self, a: str, b: str) -> list[Change]:
        """The changes from state ``a`` to state ``b``: each a reference (a session id for its
        head, a checkpoint id or short form, a commit id or prefix, ``~N``; see ``resolve``),
        in any sessions. Cost grows with the change."""
        ra, rb = await self.resolve(a), await self.resolve(b)
        return await self.repository.diff(ra.commit, rb.commit)

    async def fork(self, source: str, new_session_id: str) -> str:
        """A new session whose head is ``source`` (a checkpoint, session or commit): one new
        ref, no copy. Returns the commit id (hex). ConflictError if the session exists."""
        repo = self.repository
        rev = await self.resolve(source)
        target = names.session_ref(new_session_id)
        try:  # point_ref: the tree cannot be collected before the ref exists
            await repo.point_ref(
                target,
                rev.commit,
                expected=None,
                holders=[rev.ref] if rev.ref else (),
                message=f"fork {rev.label}"[:200],
            )
        except ConflictError:
            raise AlreadyExistsError(f"session {new_session_id!r} already exists; pick another id", target) from None
        return rev.commit.hex()

    async def reset_session(
        self, session_id: str | None = None, *, to: str, expected: str | None = None
    ) -> RestoreResult:
        """Move the session's head to ``to`` (any reference: a checkpoint, an earlier save, a
        commit; see ``resolve``), so its current state is that one and the next save continues
        from it. ``session_id`` defaults to the session ``to`` belongs to. A ref move, recorded
        in the reflog: ``reset_session(sid, to=result.previous)`` undoes it. (To read a
        checkpoint's state without moving anything, use ``restore_checkpoint``.)

        ``expected``: the head (hex commit id) the caller last saw; when given, the reset
        happens only if the session is still there (ConflictError otherwise, also when the
        session was deleted), so a stale view never overwrites newer saves or re-creates a
        deleted session."""
        repo = self.repository
        source = to
        rev = await self.resolve(source)
        sid = session_id if session_id is not None else rev.session
        if sid is None:
            raise InvalidKeyError(f"{source!r} belongs to no session: name the session to reset")
        ref = names.session_ref(sid)
        await repo.open()
        async with repo.gc_shared():
            await repo.require_complete(rev.commit, holders=[rev.ref] if rev.ref else ())
            current = await repo.head(ref)
            if expected is not None and (current is None or current.hex() != expected.lower()):
                now = f"is at {current.hex()[:12]}" if current is not None else "no longer exists"
                raise ConflictError(
                    f"session {sid!r} {now}, not at {expected[:12]} as expected (it changed since it was read); "
                    "nothing restored: look at it again, then retry",
                    ref,
                )
            if current == rev.commit:
                return RestoreResult(sid, current.hex(), current.hex(), False)
            await repo.move_ref(ref, rev.commit, expected=current, message=f"restore {sid} to {rev.label}"[:200])
        return RestoreResult(sid, current.hex() if current else None, rev.commit.hex(), True)

    async def restore_into_session(
        self, source: str, session_id: str | None = None, *, expected: str | None = None
    ) -> RestoreResult:
        """Deprecated (a DeprecationWarning): the old name of ``reset_session(session_id,
        to=source, expected=expected)``, which says that it moves the session."""
        warnings.warn(RESTORE_INTO_SESSION_DEPRECATED, DeprecationWarning, stacklevel=2)
        return await self.reset_session(session_id, to=source, expected=expected)

    # -- maintenance ------------------------------------------------------------------------

    async def forget(
        self,
        policy: Policy,
        *,
        session_ids: list[str] | None = None,
        whole_sessions: bool = False,
        dry_run: bool = False,
    ) -> ForgetReport:
        """Apply a retention policy to checkpoints (or with ``whole_sessions``, to sessions);
        removes refs only. See ``castate.repository.retention``."""
        return await forget(
            self.repository, policy, sessions=session_ids, whole_sessions=whole_sessions, dry_run=dry_run
        )

    async def gc(
        self,
        *,
        grace: float = DEFAULT_GRACE,
        reflog_expire: float = DEFAULT_REFLOG_EXPIRE,
        dry_run: bool = False,
        progress: GcProgress | None = None,
        record: bool = False,
    ) -> GcReport:
        """Delete unreachable objects older than ``grace`` seconds (see ``castate.repository.gc``).

        With ``record`` (as ``castate gc`` does) a run that is not a dry run is added to the
        store's maintenance record (``castate.repository.health``); a failure to record
        becomes a warning.
        """
        repo = await self.repository.open()
        started = time.monotonic()
        report = await collect_garbage(
            repo.backend, grace=grace, reflog_expire=reflog_expire, dry_run=dry_run, progress=progress
        )
        if record and not dry_run:
            warning = await _record(repo, gc_run(report, time.monotonic() - started))
            if warning:
                report.warnings.append(warning)
        return report

    async def fsck(
        self,
        *,
        full: bool = False,
        quarantine: bool = True,
        progress: FsckProgress | None = None,
        record: bool = False,
    ) -> FsckReport:
        """Check every ref's data (and with ``full`` every stored object).

        With ``record`` (as ``castate fsck`` does) the run is added to the store's maintenance
        record (``castate.repository.health``); a failure to record becomes a warning.
        """
        repo = await self.repository.open()
        started = time.monotonic()
        report = await fsck(repo.backend, full=full, quarantine=quarantine, progress=progress)
        if record:
            store_bytes = StoreStats(backend=await repo.backend.stats()).disk_bytes
            warning = await _record(repo, fsck_run(report, time.monotonic() - started, store_bytes))
            if warning:
                report.warnings.append(warning)
        return report

    async def repair_refs(self) -> RefRepairReport:
        """Rebuild a damaged ref store (the local ref journal) from its intact records, keeping
        the damaged file in the quarantine; works on a store too damaged to open. The report
        says what was kept and what was lost. Stores whose refs live in a database report no damage."""
        return await self.repository.repair_refs()

    async def roll_back_damaged(self, refs: list[str]) -> list[Rollback]:
        """Move each ref whose data is damaged (``fsck(...).damaged_refs``) back to the newest
        target in its reflog whose data is complete; the reflog records the move."""
        return await roll_back(self.repository, refs)

    async def stats(self, *, top: int = 10) -> StoreStats:
        repo = await self.repository.open()
        return await store_stats(repo.backend, top=top)

    async def export_session(
        self, session_id: str, path: str | os.PathLike[str], *, progress: BundleProgress | None = None
    ) -> BundleReport:
        """Write the session, its checkpoints and all their objects to one bundle file."""
        return await export_session(self.repository, session_id, path, progress=progress)

    async def import_session(
        self,
        path: str | os.PathLike[str],
        *,
        session_id: str | None = None,
        progress: BundleProgress | None = None,
        key: Secret | None = None,
        plain: bool = False,
    ) -> BundleReport:
        """Import a bundle (optionally under another session id); writes only missing objects.
        A bundle of an encrypted store opens with ``key`` (its store's key), else
        ``CASTATE_BUNDLE_PASSWORD`` / ``CASTATE_BUNDLE_KEY`` / ``CASTATE_BUNDLE_KEY_FILE``, else
        this store's own key; it is written re-encrypted under this store's keys (into an empty
        plain store only with ``plain``: it would be written decrypted)."""
        return await import_bundle(
            self.repository, path, session_id=session_id, progress=progress, key=key, plain=plain
        )


def _commit_id(value: str | bytes) -> bytes:
    """A commit id given as hex (as castate returns them) or as 32 bytes."""
    if isinstance(value, bytes):
        cid = value
    else:
        try:
            cid = bytes.fromhex(value)
        except (TypeError, ValueError):
            raise InvalidKeyError(f"expected= takes a commit id (64 hex digits), not {str(value)[:80]!r}") from None
    if len(cid) != 32:
        raise InvalidKeyError("expected= takes a commit id of 32 bytes (64 hex digits)")
    return cid


def _session_conflict(session_id: str, exc: ConflictError) -> ConflictError:
    """The repository's conflict, told in terms of the session: its id, the head the save
    built on and the head the store holds."""
    expected = exc.expected[:12] if exc.expected else "no session"
    current = exc.current[:12] if exc.current else "no session"
    return ConflictError(
        f"session {session_id!r} was saved by another writer: expected head {expected}, found {current}; "
        "load it again and reapply your change (StateManager.update_session does this with retries)",
        exc.ref,
        session_id=session_id,
        expected=exc.expected,
        current=exc.current,
    )


async def _record(repo: Repository, run: dict[str, Any]) -> str | None:
    """Add a maintenance run to the store's record; the reason as a warning when that fails."""
    try:
        await record_run(repo, run)
    except (CastateError, OSError) as exc:
        return f"the {run['op']} run was not recorded in the store's maintenance record: {exc}"
    return None


class _PlainSessions:
    """Sessions and checkpoints as plain dict copies over any dict storage backend."""

    repo: Repository | None = None  # none: plain copies keep no commits

    def __init__(self, storage: Any) -> None:
        for method in ("save", "load", "delete", "list_keys"):
            if not callable(getattr(storage, method, None)):
                raise TypeError(
                    f"{type(storage).__name__} is not a storage backend: it has no {method}() "
                    "(pass a path, a castate FileStorageBackend, or an object with save/load/delete/list_keys)"
                )
        self.storage = storage

    @staticmethod
    def _session_key(session_id: str) -> str:
        return "session_" + names.check_name(session_id, "session id")

    @staticmethod
    def _checkpoint_key(checkpoint_id: str) -> str:
        names.parse_checkpoint_id(checkpoint_id)
        return "checkpoint_" + checkpoint_id.replace("/", "!")

    async def open(self) -> None:
        pass

    async def open_for_write(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def last_seen(self, session_id: str) -> str | None:
        return None  # plain copies have no heads

    async def save(
        self, session_id: str, state: dict[str, Any], metadata: dict[str, Any] | None, default: Default | None
    ) -> bytes | None:
        record = {"session_id": session_id, "timestamp": time.time(), "state": state, "metadata": metadata or {}}
        await self.storage.save(self._session_key(session_id), record)
        return None

    async def load(self, session_id: str) -> dict[str, Any] | None:
        record = await self.storage.load(self._session_key(session_id))
        return None if record is None else record["state"]

    async def checkpoint(self, session_id: str, name: str, metadata: dict[str, Any] | None, want: bytes | None) -> str:
        if want is not None:
            raise TypeError("expected= needs a castate store: plain dict storage keeps no commits")
        record = await self.storage.load(self._session_key(session_id))
        if record is None:
            raise NotFoundError(f"no session {session_id!r} to checkpoint")
        cpid = names.new_checkpoint_id(session_id, name)
        copy = dict(record, checkpoint_id=cpid, checkpoint_name=name, checkpoint_time=time.time())
        copy["metadata"] = dict(metadata or {})
        await self.storage.save(self._checkpoint_key(cpid), copy)
        return cpid

    async def restore(self, checkpoint_id: str) -> dict[str, Any]:
        record = await self.storage.load(self._checkpoint_key(checkpoint_id))
        if record is None:
            raise NotFoundError(f"no checkpoint {checkpoint_id!r}")
        state: dict[str, Any] = record["state"]
        return state

    async def list_sessions(self) -> list[SessionInfo]:
        out = []
        for key in await self.storage.list_keys("session_"):
            record = await self.storage.load(key)
            if record is None:
                continue
            sid = record["session_id"]
            count = len(await self._checkpoint_keys(sid))
            out.append(SessionInfo(sid, record["timestamp"], count, "", dict(record.get("metadata") or {})))
        return sorted(out, key=lambda s: s.session_id)

    async def _checkpoint_keys(self, session_id: str) -> list[str]:
        prefix = "checkpoint_" + names.encode_part(names.check_name(session_id, "session id")) + "!"
        return list(await self.storage.list_keys(prefix))

    async def list_checkpoints(self, session_id: str) -> list[CheckpointInfo]:
        out = []
        for key in await self._checkpoint_keys(session_id):
            record = await self.storage.load(key)
            if record is None:
                continue
            out.append(
                CheckpointInfo(
                    record["checkpoint_id"],
                    session_id,
                    record["checkpoint_name"],
                    record["checkpoint_time"],
                    "",
                    dict(record.get("metadata") or {}),
                )
            )
        return sorted(out, key=lambda c: (c.timestamp, c.checkpoint_id), reverse=True)

    async def delete(self, session_id: str) -> int:
        keys = [self._session_key(session_id), *await self._checkpoint_keys(session_id)]
        present = [k for k in keys if await self.storage.load(k) is not None]
        for key in present:
            await self.storage.delete(key)
        return len(present)


class _RepoSessions:
    """Sessions and checkpoints on a castate repository: a session is a ref to its latest
    commit, a checkpoint a new ref to a commit (O(1), never a copy)."""

    def __init__(self, repo: Repository) -> None:
        self.repo: Repository | None = repo
        self._repository = repo

    async def open(self) -> None:
        await self._repository.open(missing_ok=True)  # a URL store not created yet: its first save does

    async def open_for_write(self) -> None:
        await self._repository.open(create=True)  # a write creates a URL store that does not exist yet

    async def close(self) -> None:
        await self._repository.close()

    async def save(
        self, session_id: str, state: dict[str, Any], metadata: dict[str, Any] | None, default: Default | None
    ) -> bytes | None:
        repo = self._repository
        ref = names.session_ref(session_id)
        await repo.open(create=True)  # a save creates a URL store that does not exist yet
        carried = await lifecycle.carried_meta(repo, ref)  # paused flag and times stay
        try:
            result = await repo.save(
                ref,
                state,
                session=session_id,
                meta={**carried, **(metadata or {})},
                default=default,
                message=f"save {session_id}"[:200],
            )
        except ConflictError as exc:
            raise _session_conflict(session_id, exc) from None
        return result.commit

    def last_seen(self, session_id: str) -> str | None:
        head = self._repository.known_head(names.session_ref(session_id))
        return head.hex() if head is not None else None

    async def load(self, session_id: str) -> dict[str, Any] | None:
        return await self._repository.load(names.session_ref(session_id))

    async def list_sessions(self) -> list[SessionInfo]:
        heads = await self._repository.list_refs(names.SESSIONS)
        checkpoints = await self._repository.list_refs(names.CHECKPOINTS)
        counts: dict[str, int] = {}
        for ref in checkpoints:
            part = ref[len(names.CHECKPOINTS) :].split("/", 1)[0]
            counts[part] = counts.get(part, 0) + 1
        commits = await self._repository.read_commits(list(heads.values()))
        moved = await moved_ns(self._repository, heads)  # a save, but also a reset, a fork, an import
        out = []
        for ref, cid in heads.items():
            sid = names.session_of_ref(ref)
            c = commits[cid]
            out.append(
                SessionInfo(sid, moved[ref] / 1e9, counts.get(names.encode_part(sid), 0), cid.hex(), dict(c.meta))
            )
        return sorted(out, key=lambda s: s.session_id)

    async def delete(self, session_id: str) -> int:
        ref = names.session_ref(session_id)
        cps = await self._repository.list_refs(names.checkpoint_prefix(session_id))
        return await self._repository.delete_refs([ref, *cps], message=f"delete session {session_id}"[:200])

    async def checkpoint(self, session_id: str, label: str, metadata: dict[str, Any] | None, want: bytes | None) -> str:
        repo = await self._repository.open()
        session_ref = names.session_ref(session_id)
        for _ in range(3):
            cpid = names.new_checkpoint_id(session_id, label)
            try:
                if not metadata and want is None:  # one step: the backend reads and writes atomically
                    await repo.copy_ref(session_ref, names.checkpoint_ref(cpid), message=f"checkpoint {label}"[:200])
                    return cpid
                # The head is read under gc's shared lock and the checkpoint's ref moves before it
                # is released: a head a ref holds is complete, and gc cannot take its tree away
                # in between (another writer's save could otherwise leave it unreferenced).
                async with repo.gc_shared():
                    head = await repo.head(session_ref)
                    if head is None:
                        raise NotFoundError(f"no session {session_id!r}")
                    if want is not None and head != want:
                        raise ConflictError(
                            f"session {session_id!r} is at {head.hex()[:12]}, expected {want.hex()[:12]}: "
                            "another writer saved it; load it again and checkpoint what you mean to",
                            session_ref,
                            session_id=session_id,
                            expected=want.hex(),
                            current=head.hex(),
                        )
                    if not metadata:
                        await repo.move_ref(
                            names.checkpoint_ref(cpid), head, expected=None, message=f"checkpoint {label}"[:200]
                        )
                        return cpid
                    await repo.add_ref_with_meta(
                        names.checkpoint_ref(cpid),
                        head,
                        session=session_id,
                        name=label,
                        meta=metadata,
                        message=f"checkpoint {label}"[:200],
                        stream=session_ref,
                    )
                return cpid
            except NotFoundError:
                raise NotFoundError(f"no session {session_id!r} to checkpoint") from None
            except ConflictError as exc:
                if exc.session_id is not None:  # the session moved, not a drawn id
                    raise
                continue  # the same id drawn twice: draw again
        raise ConflictError(f"could not allocate a checkpoint id for {session_id!r}")

    async def restore(self, checkpoint_id: str) -> dict[str, Any]:
        cid: bytes | None = None
        try:
            names.parse_checkpoint_id(checkpoint_id)
        except InvalidKeyError:
            well_formed = False
        else:
            well_formed = True
            cid = await self._repository.head(names.checkpoint_ref(checkpoint_id))  # a full id: one lookup
        if not well_formed or cid is None:  # a short form (SESSION/NAME/STAMP-PREFIX parses as an id too)
            try:
                cid = (await resolve(self._repository, checkpoint_id)).commit
            except NotFoundError as exc:
                if well_formed:
                    raise NotFoundError(f"no checkpoint {checkpoint_id!r}") from None
                raise InvalidKeyError(str(exc)) from None  # no checkpoint id, and no reference either
        state: dict[str, Any] = await self._repository.read_state((await self._repository.read_commit(cid)).root)
        return state  # a session's states are dicts (save_session takes only dicts)

    async def list_checkpoints(self, session_id: str) -> list[CheckpointInfo]:
        refs = await self._repository.list_refs(names.checkpoint_prefix(session_id))
        commits = await self._repository.read_commits(list(set(refs.values())))
        out = []
        for ref, cid in refs.items():
            cpid = ref[len(names.CHECKPOINTS) :]
            _, label, stamp = names.parse_checkpoint_id(cpid)
            meta = dict(commits[cid].meta) if commits[cid].name == label else {}
            out.append(CheckpointInfo(cpid, session_id, label, names.checkpoint_time(stamp), cid.hex(), meta))
        return sorted(out, key=lambda c: (c.timestamp, c.checkpoint_id), reverse=True)
