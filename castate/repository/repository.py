"""The repository: states as commits of content-addressed trees, named by refs.

A save encodes the state (reusing what the previous save of the same ref encoded),
writes only objects the store lacks plus one commit, and moves the ref by
compare-and-swap, all in one backend call. A ref's expected value is the head this
repository last saw for it, so a save never silently replaces a head that another
writer moved in the meantime (unless ``overwrite`` asks for exactly that).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from castate.backends.base import ANY, Backend, Durability, ReflogEntry, RefRepairReport, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.urls import open_backend
from castate.codec import Commit, Shadow, encode_commit, parse_commit
from castate.codec.encoder import Default
from castate.codec.objects import KIND_COMMIT, KIND_NAMES
from castate.errors import (
    ConflictError,
    CorruptObjectError,
    MissingObjectError,
    NotFoundError,
    StoreError,
    StoreNotFoundError,
)
from castate.keys import Secret
from castate.repository.diff import Change, diff_trees
from castate.repository.packs import PackStore
from castate.repository.snapshot import encode_state, fetch_objects, frames, read_state
from castate.repository.walk import first_damage

MAX_SHADOWS = 64  # refs whose last save is remembered for incremental encoding
MAX_COMMITS = 4096
OVERWRITE_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a save did: the commit now at the ref, its root, and whether anything changed."""

    commit: bytes
    root: bytes
    changed: bool
    objects_written: int


@dataclass(slots=True)
class _Head:
    commit: bytes
    root: bytes
    shadow: Shadow | None


# Remembered for a ref a load found absent: a save then expects it still absent, so a writer
# that saw no session cannot silently build on a session another writer created meanwhile.
_ABSENT = _Head(b"", b"", None)


class Repository:
    """Commits, refs and snapshots over one backend."""

    def __init__(self, backend: Backend | BlobBackend, *, key: Secret | None = None) -> None:
        # A blob backend keeps objects in format-2 packs; the pack store is what the rest of
        # the repository reads and writes objects through (and encrypts them with, given a key).
        if isinstance(backend, BlobBackend):
            self.backend: Backend = PackStore(backend, secret=key if key is not None else backend.secret)
        elif key is not None:
            raise StoreError(
                f"key= needs a blob backend (a store URL, a path or a castate.backends.blob.BlobBackend), "
                f"not a {type(backend).__name__}: only those are encrypted"
            )
        else:
            self.backend = backend
        self._store = backend  # the backend as given: its ``create`` says whether a write may create the store
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        self._commits: OrderedDict[bytes, Commit] = OrderedDict()
        self._open_lock = asyncio.Lock()
        self._ref_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._opened = False

    @classmethod
    def at(
        cls,
        target: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        create: bool | None = None,
        key: Secret | None = None,
    ) -> Repository:
        """A repository over the store at a URL or directory path (``castate.open``'s backend,
        whose ``create``, ``durability`` and ``key`` these are), not yet connected."""
        return cls(open_backend(target, durability=durability, create=create, key=key))

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, *, create: bool = False, missing_ok: bool = False) -> Repository:
        """Connect to the store. ``create`` (a save, an import) lets a backend whose ``create``
        is None (a URL opened by ``castate.open``) create a store that does not exist yet.
        ``missing_ok`` (``async with``) leaves such a store unopened instead of raising
        StoreNotFoundError: the first save creates it, a read before that raises."""
        async with self._open_lock:
            if not self._opened:
                lazy = getattr(self._store, "create", True) is None
                if create and lazy:
                    self._store.create = True  # type: ignore[union-attr]  # lazy: this backend has a create attribute
                try:
                    await self.backend.open()
                except StoreNotFoundError:
                    if missing_ok and lazy:
                        return self
                    raise
                self._opened = True
        return self

    async def close(self) -> None:
        if self._opened:
            await self.backend.close()
            self._opened = False
        self._heads.clear()

    async def __aenter__(self) -> Repository:
        return await self.open(missing_ok=True)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing -----------------------------------------------------------------------------

    async def save(
        self,
        ref: str,
        state: Any,
        *,
        session: str | None = None,
        name: str | None = None,
        meta: dict[str, Any] | None = None,
        default: Default | None = None,
        message: str = "save",
        overwrite: bool = False,
        extra_updates: Sequence[RefUpdate] = (),
        stream: str | None = None,
        also: Sequence[str] = (),
        new: bool = False,
    ) -> SaveResult:
        """Save ``state`` as the new head of ``ref``.

        Raises ConflictError when the head moved since this repository last saw it, unless
        ``overwrite``. A state equal to the head's is a no-op (no objects, no commit).
        ``stream`` (default: ``ref``) groups saves for the backend's compression: saves of
        many refs that share content (one ref per checkpoint) compress best as one stream.
        ``also`` names refs to point at the new commit too, in the same atomic ref update
        (whatever they pointed at before): a ref per checkpoint whose saves are encoded
        incrementally through one working ref. ``new`` says the ref must not exist yet: the
        save skips looking it up and raises ConflictError if it does exist.
        """
        await self.open(create=True)
        if new:
            return await self._save_once(
                ref, state, None, session, name, meta, default, message, extra_updates, stream or ref, also
            )
        # Saves of one ref from this repository take turns: each builds on the one before, as
        # sequential saves do, instead of racing each other's compare-and-swap.
        lock = self._ref_locks.get(ref)
        if lock is None:
            lock = self._ref_locks[ref] = asyncio.Lock()
        async with lock:
            for _ in range(OVERWRITE_ATTEMPTS):
                head = await self._known_head(ref)
                try:
                    return await self._save_once(
                        ref, state, head, session, name, meta, default, message, extra_updates, stream or ref, also
                    )
                except ConflictError as exc:
                    self._heads.pop(ref, None)
                    if not overwrite:
                        if exc.ref == ref:  # the head moved: say from what, to what
                            exc.expected = head.commit.hex() if head else None
                            current = await self.backend.get_ref(ref)
                            exc.current = current.hex() if current else None
                        raise
        raise ConflictError(f"ref {ref} kept moving during {OVERWRITE_ATTEMPTS} attempts to overwrite it", ref)

    async def _known_head(self, ref: str) -> _Head | None:
        head = self._heads.get(ref)
        if head is not None:
            self._heads.move_to_end(ref)
            return None if head is _ABSENT else head
        cid = await self.backend.get_ref(ref)
        if cid is None:
            return None
        commit = await self.read_commit(cid)
        return self._remember(ref, _Head(cid, commit.root, None))

    def _remember(self, ref: str, head: _Head) -> _Head:
        self._heads[ref] = head
        self._heads.move_to_end(ref)
        while len(self._heads) > MAX_SHADOWS:
            self._heads.popitem(last=False)
        return head

    async def _save_once(
        self,
        ref: str,
        state: Any,
        head: _Head | None,
        session: str | None,
        name: str | None,
        meta: dict[str, Any] | None,
        default: Default | None,
        message: str,
        extra_updates: Sequence[RefUpdate],
        stream: str,
        also: Sequence[str],
    ) -> SaveResult:
        root, shadow, objects = encode_state(state, head.shadow if head else None, default, self.backend.ids)
        if head is not None and root == head.root and not extra_updates and not also:
            head.shadow = shadow
            return SaveResult(head.commit, root, False, 0)
        commit = Commit(
            root=root,
            parents=(head.commit,) if head else (),
            session=session,
            time_ns=time.time_ns(),
            name=name,
            meta=dict(meta or {}),
        )
        content = encode_commit(commit)
        cid = self.backend.ids.object_id(KIND_COMMIT, content)
        compress = not self.backend.packs_objects
        items = frames(objects, compress=compress)
        history = frames({cid: (KIND_COMMIT, content)}, compress=compress)
        update = RefUpdate(ref, cid, head.commit if head else None)
        updates = [update, *(RefUpdate(name, cid, ANY) for name in also), *extra_updates]
        try:
            written = await self.backend.commit(items, updates, message=message, stream=stream, history=history)
        except BaseException:
            self._heads.pop(ref, None)  # the store tells what the ref is now, not this cache
            raise
        for other in also:
            self._heads.pop(other, None)
        self._cache_commit(cid, commit)
        self._remember(ref, _Head(cid, root, shadow))
        return SaveResult(cid, root, True, written)

    async def recommit(
        self, ref: str, head: bytes, *, meta: dict[str, Any], name: str | None = None, message: str = "recommit"
    ) -> bytes:
        """Move ``ref`` from ``head`` to a new commit of the same root with ``meta``; returns it.

        For changes that are not the state's (a pause, a resume, a write of equal content):
        the state is not encoded again. ConflictError when ``ref`` is no longer at ``head``.
        """
        await self.open()
        old = await self.read_commit(head)
        commit = Commit(old.root, (head,), old.session, time.time_ns(), name, dict(meta))
        content = encode_commit(commit)
        cid = self.backend.ids.object_id(KIND_COMMIT, content)
        history = frames({cid: (KIND_COMMIT, content)}, compress=not self.backend.packs_objects)
        known = self._heads.pop(ref, None)
        await self.backend.commit([], [RefUpdate(ref, cid, head)], message=message, stream=ref, history=history)
        self._cache_commit(cid, commit)
        self._remember(ref, _Head(cid, old.root, known.shadow if known and known.commit == head else None))
        return cid

    async def add_ref_with_meta(
        self,
        ref: str,
        head: bytes,
        *,
        session: str | None,
        name: str | None,
        meta: dict[str, Any],
        message: str,
        stream: str,
    ) -> bytes:
        """Point the new ``ref`` at a new commit of ``head``'s root, with ``head`` as its parent
        and ``meta``; returns it. A checkpoint that carries metadata: the state is not encoded
        again. ConflictError when ``ref`` exists already. Call it under ``gc_shared()`` with
        ``head`` read there, so gc cannot take ``head``'s tree away in between."""
        await self.open()
        root = (await self.read_commit(head)).root
        commit = Commit(root, (head,), session, time.time_ns(), name, dict(meta))
        content = encode_commit(commit)
        cid = self.backend.ids.object_id(KIND_COMMIT, content)
        history = frames({cid: (KIND_COMMIT, content)}, compress=not self.backend.packs_objects)
        await self.backend.commit([], [RefUpdate(ref, cid, None)], message=message, stream=stream, history=history)
        self._cache_commit(cid, commit)
        return cid

    def gc_shared(self) -> AbstractAsyncContextManager[None]:
        """gc's shared lock (``Backend.gc_shared``): hold it from reading a head to moving a
        ref to it, so the tree stays stored in between."""
        return self.backend.gc_shared()

    async def require_complete(self, cid: bytes, *, holders: Sequence[str] = ()) -> None:
        """Raise MissingObjectError (or CorruptObjectError) unless commit ``cid``'s whole tree is stored.

        Call it while holding ``backend.gc_shared()`` and keep holding it until the ref that
        is to point at ``cid`` has moved: then gc cannot delete the tree in between. A commit
        a ref holds is complete (gc keeps everything a ref reaches), so ``holders`` (refs
        likely to hold it) and then every ref are asked first; only a commit no ref holds
        costs a walk of its tree (``walk.first_damage``).
        """
        await self.open()
        if holders and cid in (await self.backend.get_refs(holders)).values():
            return
        if cid in (await self.backend.list_refs()).values():
            return
        problem = await first_damage(self.backend, cid)
        if problem is None:
            return
        detail = f"in the tree of commit {cid.hex()}, which no ref holds: gc removed part of it"
        if problem.what == "missing":
            raise MissingObjectError(problem.id.hex(), detail)
        raise CorruptObjectError(problem.id.hex(), f"{problem.detail} ({detail})")

    def known_head(self, ref: str) -> bytes | None:
        """The head this repository last saved or loaded for ``ref`` (no I/O), or None."""
        head = self._heads.get(ref)
        return head.commit if head is not None and head is not _ABSENT else None

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        await self.open()
        try:
            await self.backend.update_refs(updates, message=message)
        finally:
            for u in updates:
                self._heads.pop(u.name, None)

    async def move_ref(self, ref: str, to: bytes | None, *, expected: bytes | None, message: str = "") -> None:
        """Compare-and-swap one ref: point ``ref`` at commit ``to`` (None deletes it) if it is
        at ``expected`` now (None: if it does not exist), else ConflictError; the reflog records
        the move. ``to`` must be a commit a ref holds (read under ``gc_shared()``, still held):
        for any other commit use ``point_ref``, which checks it is still whole."""
        await self.update_refs([RefUpdate(ref, to, expected)], message=message)

    async def point_ref(
        self,
        ref: str,
        commit: bytes,
        *,
        expected: bytes | None,
        holders: Sequence[str] = (),
        message: str = "",
    ) -> None:
        """``move_ref`` for a commit no ref may hold any more (an older save, another session's
        checkpoint, the save another writer has since replaced): under gc's shared lock it
        checks that ``commit``'s tree is complete (``require_complete``, asking ``holders``
        first) and moves the ref before gc can run, so the ref never points at a tree gc took
        away. MissingObjectError when it is gone already; ConflictError as ``move_ref``."""
        await self.open()
        async with self.gc_shared():
            await self.require_complete(commit, holders=holders)
            await self.move_ref(ref, commit, expected=expected, message=message)

    async def delete_refs_at(self, targets: Mapping[str, bytes], *, message: str = "delete") -> None:
        """Delete each ref in ``targets`` (ref -> the commit it must still point at), all or
        none: ConflictError when any of them moved."""
        await self.update_refs([RefUpdate(ref, None, cid) for ref, cid in targets.items()], message=message)

    async def repair_refs(self) -> RefRepairReport:
        """Rebuild a damaged ref store from its intact records (``Backend.repair_refs``); works
        on a store too damaged to open."""
        return await self.backend.repair_refs()

    async def copy_ref(self, source: str, target: str, *, message: str = "") -> bytes:
        """Create ``target`` pointing at ``source``'s current commit (O(1)); NotFoundError without it."""
        await self.open()
        return await self.backend.copy_ref(source, target, expected=None, message=message)

    async def delete_refs(self, names: Sequence[str], *, message: str = "delete") -> int:
        """Delete refs atomically (those that exist); returns how many went."""
        await self.open()
        current = await self.backend.get_refs(names)
        if current:
            await self.update_refs([RefUpdate(n, None, v) for n, v in current.items()], message=message)
        return len(current)

    # -- reading ------------------------------------------------------------------------------

    async def head(self, ref: str) -> bytes | None:
        await self.open()
        return await self.backend.get_ref(ref)

    async def load(self, ref: str) -> Any | None:
        """The state at ``ref``'s head, or None when the ref does not exist."""
        await self.open()
        cid = await self.backend.get_ref(ref)
        if cid is None:
            self._remember(ref, _ABSENT)
            return None
        commit = await self.read_commit(cid)
        state = await read_state(self.backend, commit.root)
        known = self._heads.get(ref)
        if known is None or known.commit != cid:
            self._remember(ref, _Head(cid, commit.root, None))
        return state

    async def head_commit(self, ref: str) -> tuple[bytes, Commit] | None:
        """The head this repository last saw for ``ref`` (read from the store if none) and its commit.

        No I/O when this repository last saved or loaded ``ref``. If another writer moved the
        ref since, the next save of ``ref`` raises ConflictError, so a save may build on this.
        """
        await self.open()
        head = await self._known_head(ref)
        if head is None:
            return None
        return head.commit, await self.read_commit(head.commit)

    async def read_state(self, root: bytes) -> Any:
        await self.open()
        return await read_state(self.backend, root)

    async def read_commit(self, cid: bytes) -> Commit:
        return (await self.read_commits([cid]))[cid]

    async def read_commits(self, cids: Sequence[bytes]) -> dict[bytes, Commit]:
        await self.open()
        out = {c: self._commits[c] for c in cids if c in self._commits}
        missing = [c for c in cids if c not in out]
        if missing:
            for cid, (kind, content) in (await fetch_objects(self.backend, missing)).items():
                if kind != KIND_COMMIT:
                    raise CorruptObjectError(cid.hex(), f"expected a commit, found a {KIND_NAMES[kind]} object")
                out[cid] = self._cache_commit(cid, parse_commit(cid, content))
        return out

    def _cache_commit(self, cid: bytes, commit: Commit) -> Commit:
        self._commits[cid] = commit
        while len(self._commits) > MAX_COMMITS:
            self._commits.popitem(last=False)
        return commit

    async def resolve(self, ref: str) -> Commit:
        cid = await self.head(ref)
        if cid is None:
            raise NotFoundError(f"no ref {ref}")
        return await self.read_commit(cid)

    async def log(self, ref: str, limit: int | None = None) -> list[tuple[bytes, Commit]]:
        """Commits from the head of ``ref`` back along first parents, newest first.

        History ends early where gc removed older saves (kept only by the reflog for a
        while; see ``castate.repository.gc``): the last commit then still lists a parent.
        """
        cid = await self.head(ref)
        out: list[tuple[bytes, Commit]] = []
        while cid is not None and (limit is None or len(out) < limit):
            try:
                commit = await self.read_commit(cid)
            except MissingObjectError:
                if not out:
                    raise
                break
            out.append((cid, commit))
            cid = commit.parents[0] if commit.parents else None
        return out

    async def diff(self, a: bytes, b: bytes) -> list[Change]:
        """The changes that turn commit ``a``'s state into commit ``b``'s (see ``castate.repository.diff``)."""
        commits = await self.read_commits([a, b])
        return await diff_trees(self.backend, commits[a].root, commits[b].root)

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        await self.open()
        return await self.backend.list_refs(prefix)

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        await self.open()
        return await self.backend.reflog(name)


__all__ = ["ANY", "Repository", "SaveResult"]
