"""What the pages show, as JSON-ready documents built from the library: sessions and their
histories, per-save growth, the head's moves, diffs, one level of a state, the store's stats
and maintenance record, and the write actions the page may ask for.

Every number comes from a library call (``StateManager``, ``Repository``, ``GrowthIndex``,
``browse.level``, ``store_stats``, ``read_runs``); this module gathers, labels and keeps
what does not change (see ``Explorer``). How a diff and a list of messages are shaped lives
in ``castate.ui.changes`` and ``castate.ui.messages``. Nothing here knows HTTP
(``castate.ui.app`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from castate.display import iso_time, to_json
from castate.errors import CastateError, ConflictError, InvalidKeyError, MissingObjectError, NotFoundError, UsageError
from castate.repository import browse
from castate.repository import refs as names
from castate.repository.growth import Growth, GrowthIndex
from castate.repository.health import read_runs
from castate.repository.tree import Loader, entry_at, parse_pointer
from castate.sessions.manager import StateManager
from castate.ui.changes import by_key, present
from castate.ui.fold import FOLD, fold
from castate.ui.messages import summaries
from castate.ui.sizecache import SizeCache

if TYPE_CHECKING:
    from castate.repository import Commit  # the type only: commits come from the repository

MAX_CHANGES = 2000  # changes a diff sends
MAX_VALUE = 16 << 20  # bytes of a str or bytes value sent whole
INLINE_GROWTH = 1000  # unknown saves measured within a request; more go to the background
GROWTH_SLICE = 100  # saves the background measures before letting requests in
HEALTH_EVERY = 10.0  # seconds between two walks of the store for its stats while refs keep moving
CACHE_EVERY = 10.0  # seconds between two writes of the size cache while sizes keep being measured


def _item(item: browse.Item) -> dict[str, Any]:
    return {"key": item.key, "kind": item.kind, "size": item.size, "value": item.value, "complete": item.complete}


@dataclass(slots=True)
class _Chain:
    """A session's saves, oldest first, as read at ``head``."""

    head: bytes
    entries: list[tuple[bytes, Commit]]
    index: dict[bytes, int]


class Explorer:
    """The documents behind the pages, over one open ``StateManager``.

    What the pages ask for again and again is kept, keyed by what would change it, so a view
    costs what changed since the last one and not a re-read of every history:

    - each session's chain of saves, per head: after new saves only they are read;
    - every commit the reflog names, read in one batch the first time a chain is needed
      (a hint only: the chain is still followed parent by parent);
    - each save's growth (``GrowthIndex``, final per commit and history base); a history
      with more than ``INLINE_GROWTH`` saves to walk is measured in the background, and the
      documents say ``growth_pending`` until it is done. With a ``SizeCache`` what was
      measured is read back from it the first time sizes are needed, and written to it when
      a background measure ends, at most every ``CACHE_EVERY`` seconds while measuring,
      and on ``close``: a restarted server shows the sizes at once;
    - the timeline and health documents, per state of the refs (any ref move recomputes).
    """

    def __init__(self, sm: StateManager, cache: SizeCache | None = None) -> None:
        self.sm = sm
        self.repo = sm.repository
        self.growth = GrowthIndex(self.repo.backend)
        self.cache = cache
        self._cache_read = cache is None
        self._cache_dirty = False
        self._cache_saved = time.monotonic()
        self._cache_task: asyncio.Task[None] | None = None
        self._growth_lock = asyncio.Lock()
        self._growth_queue: list[list[bytes]] = []
        self._growth_task: asyncio.Task[None] | None = None
        self.growth_error: str | None = None  # why the last background measuring stopped
        self._chains: dict[str, _Chain] = {}
        self._commits: dict[bytes, Commit] = {}
        self._summaries: dict[bytes, dict[str, Any]] = {}  # per save: commit, time, session, metadata
        self._hinted = False
        self._hint_lock = asyncio.Lock()
        self._warming: asyncio.Task[None] | None = None
        self._timelines: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._timeline_bodies: dict[str, tuple[dict[str, Any], bytes]] = {}  # per kept document: its JSON
        self._health: tuple[Any, dict[str, Any]] | None = None

    @property
    def location(self) -> str:
        return str(self.repo.backend.location)

    # -- sessions and their histories -------------------------------------------------------------

    async def _commit(self, cid: bytes) -> Commit:
        commit = self._commits.get(cid)
        if commit is None and not self._hinted:
            async with self._hint_lock:  # a request arriving meanwhile waits for the batch
                if not self._hinted:
                    ids = list({e.new for e in await self.repo.reflog() if e.new is not None} - self._commits.keys())
                    for i in range(0, len(ids), 4096):
                        try:
                            self._commits.update(await self.repo.read_commits(ids[i : i + 4096]))
                        except CastateError:
                            break  # a hint only: a commit gc took is read (and reported) on the way below
                    self._hinted = True
            commit = self._commits.get(cid)
        if commit is None:
            commit = self._commits[cid] = await self.repo.read_commit(cid)
        return commit

    async def _chain(self, session_id: str, head: bytes | None = None) -> _Chain:
        """The session's saves oldest first (as ``Repository.log``), reading only the saves
        made since the last call."""
        ref = names.session_ref(session_id)
        head = head if head is not None else await self.repo.head(ref)
        if head is None:
            raise NotFoundError(f"no session {session_id!r}")
        kept = self._chains.get(session_id)
        if kept is not None and kept.head == head:
            return kept
        newer: list[tuple[bytes, Commit]] = []
        prefix: list[tuple[bytes, Commit]] = []
        cid: bytes | None = head
        while cid is not None:
            if kept is not None and cid in kept.index:
                prefix = kept.entries[: kept.index[cid] + 1]
                break
            try:
                commit = await self._commit(cid)
            except MissingObjectError:
                if not newer:
                    raise
                break  # gc removed older saves: the history ends here, as in `castate log`
            newer.append((cid, commit))
            cid = commit.parents[0] if commit.parents else None
        entries = prefix + newer[::-1]
        chain = _Chain(head, entries, {c: i for i, (c, _) in enumerate(entries)})
        self._chains[session_id] = chain
        return chain

    async def _growth_of(self, ids: list[bytes]) -> list[Growth] | None:
        """The growth of each save, or None while a long history is measured in the background."""
        if not self._cache_read:
            await self._read_cache()
        known = self.growth.known(ids)
        if known is not None:
            return known
        self.growth_error = None
        if self.growth.pending(ids) <= INLINE_GROWTH:
            async with self._growth_lock:
                growth = await self.growth.history(ids)
            self._cache_dirty = True
            return growth
        if ids not in self._growth_queue:
            self._growth_queue.append(ids)
        return None

    def _kick(self) -> None:
        """Start measuring what ``_growth_of`` queued, and write the size cache when it is
        due: called when a document is ready, so neither slows the request that asked."""
        if self._growth_queue and (self._growth_task is None or self._growth_task.done()):
            self._growth_task = asyncio.get_running_loop().create_task(self._measure())
        elif self._cache_dirty and time.monotonic() - self._cache_saved >= CACHE_EVERY:
            self._write_cache_soon()

    # -- the size cache (see castate.ui.sizecache) ----------------------------------------------

    async def _read_cache(self) -> None:
        self._cache_read = True
        assert self.cache is not None
        state = await asyncio.to_thread(self.cache.load)
        if state is not None:
            async with self._growth_lock:
                self.growth.absorb(state)

    def _write_cache_soon(self) -> None:
        if self.cache is not None and (self._cache_task is None or self._cache_task.done()):
            self._cache_task = asyncio.get_running_loop().create_task(self._write_cache())

    async def _write_cache(self) -> None:
        """Write what is known of the histories shown now (what gc or a restore left behind
        is dropped from the file)."""
        if self.cache is None or not self._cache_read:
            return
        self._cache_dirty = False
        self._cache_saved = time.monotonic()
        chains = [[c for c, _ in chain.entries] for chain in self._chains.values()]
        async with self._growth_lock:
            state = self.growth.export(chains)
        await asyncio.to_thread(self.cache.save, state)

    @property
    def cache_note(self) -> str | None:
        """What went wrong with the size cache last (None: nothing)."""
        return self.cache.note if self.cache is not None else None

    async def _measure(self) -> None:
        # Slice by slice (each continues the walk where the last stopped), letting requests
        # run in between: the walk reads and decodes without awaiting anything slow.
        try:
            while self._growth_queue:
                ids = self._growth_queue.pop(0)
                for end in range(GROWTH_SLICE, len(ids) + GROWTH_SLICE, GROWTH_SLICE):
                    async with self._growth_lock:
                        await self.growth.history(ids[:end])
                    self._cache_dirty = True
                    if time.monotonic() - self._cache_saved >= CACHE_EVERY:
                        await self._write_cache()  # the progress so far survives a restart
                    await asyncio.sleep(0)
            if self._cache_dirty:
                await self._write_cache()
        except CastateError as exc:  # shown by the next document, which retries
            self.growth_error = str(exc)
            self._growth_queue.clear()

    async def settle(self) -> None:
        """Wait for the background measuring and cache writes (benchmarks and tests)."""
        for task in (self._growth_task, self._cache_task):
            while task is not None and not task.done():
                await asyncio.shield(task)

    async def close(self) -> None:
        """Stop the background measuring and keep what it measured (before the store closes)."""
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        if self._growth_task is not None and not self._growth_task.done():
            self._growth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._growth_task
        if self._cache_task is not None and not self._cache_task.done():
            with contextlib.suppress(CastateError):
                await self._cache_task
        if self._cache_dirty:
            await self._write_cache()

    def start_warming(self) -> None:
        """Read every session's history (and the kept sizes) now, before the first request:
        on a 10,000-save store that is most of the first view's time (reading the commits).
        Requests arriving meanwhile wait for it rather than read the same commits again."""
        self._warming = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(CastateError, OSError):  # the request that needs it reports it
            await self.sessions()

    async def _warmed(self) -> None:
        task = self._warming
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.shield(task)

    async def sessions(self) -> dict[str, Any]:
        await self._warmed()
        rows = []
        pending = False
        listed = await self.sm.list_sessions()
        chains = [await self._chain(s.session_id, bytes.fromhex(s.head) if s.head else None) for s in listed]
        for s, chain in zip(listed, chains, strict=True):
            growth = await self._growth_of([c for c, _ in chain.entries])
            pending = pending or growth is None
            rows.append(
                {
                    "session_id": s.session_id,
                    "updated": iso_time(s.timestamp),
                    "timestamp": s.timestamp,
                    "saves": len(chain.entries),
                    "checkpoints": s.checkpoint_count,
                    "logical_bytes": growth[-1].logical_bytes if growth else None,
                    "stored_bytes": sum(g.new_bytes for g in growth) if growth else None,
                    "head": s.head,
                    "paused": s.paused,
                    "older_history_removed": bool(chain.entries[0][1].parents),
                }
            )
        self._kick()
        return {
            "sessions": rows,
            "growth_pending": pending,
            "growth_error": self.growth_error,
            "cache_error": self.cache_note,
        }

    async def timeline(self, session_id: str) -> dict[str, Any]:
        await self._warmed()
        refs = await self.repo.list_refs()
        key = tuple(sorted(refs.items()))
        kept = self._timelines.get(session_id)
        if kept is not None and kept[0] == key:
            return kept[1]
        head = refs.get(names.session_ref(session_id))
        if head is None:
            raise NotFoundError(f"no session {session_id!r}")
        doc = await self._timeline(session_id, head)
        self._kick()
        if not doc["growth_pending"]:
            self._timelines[session_id] = (key, doc)
        return doc

    async def timeline_json(self, session_id: str) -> bytes:
        """``timeline`` as JSON, encoded once per kept document: on a 10,000-save history
        the encoding (typed values made plain, 2.4 MB) took most of a repeated request."""
        doc = await self.timeline(session_id)
        kept = self._timeline_bodies.get(session_id)
        if kept is not None and kept[0] is doc:
            return kept[1]
        try:  # the document is plain JSON already (each save's metadata made plain once, in _meta)
            body = orjson.dumps(doc)
        except TypeError:
            body = to_json(doc, indent=False).encode("utf-8")
        if not doc["growth_pending"]:
            self._timeline_bodies[session_id] = (doc, body)
        return body

    async def _timeline(self, session_id: str, head: bytes) -> dict[str, Any]:
        chain = await self._chain(session_id, head)
        entries = chain.entries
        growth = await self._growth_of([c for c, _ in entries])
        own_ref = names.session_ref(session_id)
        index = chain.index
        points: list[dict[str, Any]] = []
        summaries = self._summaries
        for i, (cid, c) in enumerate(entries):
            base = summaries.get(cid)
            if base is None:  # what a save says of itself never changes: made once per commit
                base = summaries[cid] = {
                    "commit": cid.hex(),
                    "time_ns": c.time_ns,
                    "session": c.session,
                    "meta": _meta(c.meta),
                }
                if c.name:
                    base["name"] = c.name
            g = growth[i] if growth is not None else None
            points.append(
                {
                    **base,
                    "new_objects": g.new_objects if g else None,
                    "new_bytes": g.new_bytes if g else None,
                    "logical_bytes": g.logical_bytes if g else None,
                    "complete": g.complete if g else True,
                }
            )

        elsewhere = []
        cps = await self.sm.list_checkpoints(session_id)
        commits = await self.repo.read_commits([bytes.fromhex(c.commit) for c in cps])
        for cp in reversed(cps):  # oldest first
            cid = bytes.fromhex(cp.commit)
            label = {"checkpoint_id": cp.checkpoint_id, "name": cp.name, "time": iso_time(cp.timestamp)}
            at = index.get(cid)
            parents = commits[cid].parents
            if at is None and parents and parents[0] in index:
                # A checkpoint with metadata is a commit of its own on top of the save it keeps.
                at = index[parents[0]]
            if at is None:
                elsewhere.append({**label, "commit": cp.commit})
            else:
                points[at].setdefault("checkpoints", []).append(label)

        for e in await self.repo.reflog():
            if e.new is None or e.new not in index or not e.name.startswith(names.SESSIONS):
                continue
            mark = None
            if e.name == own_ref and e.old is None and e.message.startswith("fork "):
                mark = {"kind": "fork", "text": f"forked from {e.message[5:]}"}
            elif e.name != own_ref and e.old is None and e.message.startswith("fork "):
                mark = {"kind": "fork", "text": f"forked to {names.session_of_ref(e.name)}"}
            elif e.name == own_ref and e.message.startswith("restore "):
                mark = {"kind": "restore", "text": e.message}
            if mark is not None:
                points[index[e.new]].setdefault("marks", []).append({**mark, "time": iso_time(e.time_ns / 1e9)})
        return {
            "session_id": session_id,
            "head": head.hex(),
            "points": points,
            "stored_bytes": sum(g.new_bytes for g in growth) if growth is not None else None,
            "growth_pending": growth is None,
            "growth_error": self.growth_error,
            "older_history_removed": bool(entries[0][1].parents),
            "checkpoints_elsewhere": elsewhere,
        }

    async def revisions(self) -> dict[str, Any]:
        """Every session and checkpoint, for pickers."""
        sessions = [s.session_id for s in await self.sm.list_sessions()]
        refs = await self.repo.list_refs(names.CHECKPOINTS)
        return {"sessions": sessions, "checkpoints": sorted(r[len(names.CHECKPOINTS) :] for r in refs)}

    # -- states ------------------------------------------------------------------------------

    async def _revision(self, rev: str) -> dict[str, Any]:
        r = await self.sm.resolve(rev)
        c = await self.repo.read_commit(r.commit)
        return {
            "rev": rev,
            "label": r.label,
            "commit": r.commit.hex(),
            "session": c.session,
            "time": iso_time(c.time_ns / 1e9),
            "root": c.root,
        }

    async def diff(self, a: str, b: str, path: str = "", offset: int = 0, limit: int = MAX_CHANGES) -> dict[str, Any]:
        """The changes from ``a`` to ``b``: counts in all and by top-level key, then the changes
        under ``path`` (a JSON pointer prefix; "" for all) from ``offset``, at most ``limit``.
        Items added to (or removed from) one list one after the other are one entry, a run
        (``{"run": true, "op", "path": the list, "first", "count", "roles", "items": the first
        RUN_ITEMS}``); ``offset`` and ``limit`` count entries. A str replaced by a str carries
        ``text_diff`` (lines, and words within a changed line)."""
        parse_pointer(path)  # refuse a malformed prefix, as the tree does
        ra, rb = await self._revision(a), await self._revision(b)
        changes = await self.sm.diff(a, b)
        counts = {op: sum(1 for c in changes if c.op == op) for op in ("add", "remove", "replace")}
        shown = present(changes, path, offset, limit)
        ra.pop("root")
        rb.pop("root")
        return {
            "a": ra,
            "b": rb,
            "total": len(changes),
            "counts": counts,
            "by_key": by_key(changes),
            "path": path,
            "offset": offset,
            **shown,
        }

    async def tree(self, rev: str, path: str, offset: int, limit: int) -> dict[str, Any]:
        r = await self._revision(rev)
        root = r.pop("root")
        parts = parse_pointer(path)
        loader = Loader(self.repo.backend)
        node = await browse.level(loader, root, parts, offset=offset, limit=min(limit, 1000))
        if isinstance(node, browse.Level):
            items = [_item(i) for i in node.items]
            if node.kind == "list":
                for at, preview in (await summaries(loader, root, parts, node)).items():
                    items[at]["message"] = preview
            body = {"kind": node.kind, "total": node.total, "offset": node.offset, "items": items}
        else:
            body = _item(node)
        return {**r, "path": path, "node": body}

    async def value(self, rev: str, path: str) -> dict[str, Any]:
        """The whole value at ``path`` (a str or bytes value up to ``MAX_VALUE`` bytes)."""
        r = await self._revision(rev)
        loader = Loader(self.repo.backend)
        entry = await entry_at(loader, r.pop("root"), parse_pointer(path))
        (item,) = await browse.describe(loader, [(None, entry)], 0)
        if item.kind not in ("str", "bytes"):
            raise UsageError(f"{path or '/'} holds a {item.kind}: open it as a tree")
        if item.size is not None and item.size > MAX_VALUE:
            raise UsageError(
                f"{path} is {item.size} bytes, too large to show whole here; use `castate show {rev} --path {path}`"
            )
        (value,) = await loader.values([entry])
        return {**r, "path": path, "kind": item.kind, "value": value}

    # -- the store -----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """The store's stats and its recorded gc and fsck runs. The runs are read on every
        call (one ref). The stats, a walk of the store, are computed again only when a ref
        moved, and at most every ``HEALTH_EVERY`` seconds on a store whose sessions keep
        saving: ``now.time`` says when they were computed."""
        key = tuple(sorted((await self.repo.list_refs()).items()))
        kept = self._health
        if kept is None or (kept[0] != key and time.time() - kept[1]["time"] >= HEALTH_EVERY):
            kept = self._health = (key, await self._stats())
        runs = await read_runs(self.repo)
        last = {op: next((r for r in reversed(runs) if r.get("op") == op), None) for op in ("gc", "fsck")}
        return {"now": kept[1], "last_gc": last["gc"], "last_fsck": last["fsck"], "runs": runs}

    async def _stats(self) -> dict[str, Any]:
        stats = await self.sm.stats(top=0)
        return {
            "time": time.time(),
            "sessions": stats.sessions,
            "checkpoints": stats.checkpoints,
            "objects": stats.objects,
            "object_bytes": stats.object_bytes,
            "reachable_objects": stats.reachable_objects,
            "reachable_bytes": stats.reachable_bytes,
            "store_bytes": stats.disk_bytes,
            "logical_bytes": stats.logical_bytes,
            "dedup_ratio": round(stats.dedup_ratio, 3),
        }

    # -- actions (only served with --allow-writes) ---------------------------------------------

    async def restore(self, source: str, session_id: str, expected: str) -> dict[str, Any]:
        """Restore ``source`` into ``session_id`` only if its head is still ``expected`` (the
        head the page showed): a moved or deleted session is a conflict, never overwritten."""
        return (await self.sm.reset_session(session_id, to=source, expected=expected)).to_dict()

    async def fork(self, source: str, new_session_id: str) -> dict[str, Any]:
        return {"session_id": new_session_id, "head": await self.sm.fork(source, new_session_id)}

    async def undo_fork(self, session_id: str, expected: str) -> dict[str, Any]:
        """Delete the session a fork created, only if nothing moved it since: its last reflog
        entry is that fork, at ``expected`` (the head the fork returned), it holds no
        checkpoint, and the delete itself is a compare-and-swap on ``expected`` (a save landing
        in between is a conflict). Anything else is a conflict: the page deletes nothing else.
        The fork's saves stay where they came from; the delete is recorded in the reflog."""
        want = _commit_hex(expected)
        ref = names.session_ref(session_id)

        def refused(why: str) -> ConflictError:
            return ConflictError(
                f"session {session_id!r} {why}: undoing the fork would lose that, so nothing was deleted "
                f"(delete it with `castate rm {session_id}` if you mean to)",
                ref,
            )

        log = await self.repo.reflog(ref)
        last = log[-1] if log else None
        if last is None or last.new is None:
            raise ConflictError(f"session {session_id!r} no longer exists: nothing to undo", ref)
        if last.new != want or last.old is not None or not last.message.startswith("fork "):
            raise refused(f"moved since the fork ({last.message[:80]!r}, now at {last.new.hex()[:12]})")
        cps = await self.repo.list_refs(names.checkpoint_prefix(session_id))
        if cps:
            raise refused(f"has {len(cps)} checkpoint(s) since the fork")
        try:
            await self.repo.move_ref(ref, None, expected=want, message=f"undo fork {session_id}"[:200])
        except ConflictError:
            raise refused("moved while it was being deleted") from None
        return {"session_id": session_id, "deleted": want.hex()}

    async def checkpoint(self, session_id: str, name: str, expected: str) -> dict[str, Any]:
        """Checkpoint the session's head if it is still ``expected``, in one step with the
        checkpoint (``create_checkpoint(expected=)``): a save landing in between is a conflict."""
        await self._expect_head(session_id, expected)  # a deleted session says so by name
        return {"checkpoint_id": await self.sm.create_checkpoint(session_id, name, expected=expected)}

    async def _expect_head(self, session_id: str, expected: str) -> None:
        current = await self.repo.head(names.session_ref(session_id))
        if current is None or current.hex() != expected.lower():
            now = f"is at {current.hex()[:12]}" if current is not None else "no longer exists"
            raise ConflictError(
                f"session {session_id!r} {now}, not at {expected[:12]} as the page showed: "
                "look at it again, then retry",
                names.session_ref(session_id),
            )

    # -- the head's own history ---------------------------------------------------------------

    async def reflog(self, session_id: str, offset: int, limit: int, saves: bool) -> dict[str, Any]:
        """Every move of the session's head, newest first (``saves=False`` leaves out plain
        saves): what a restore replaced stays listed here, and can be restored, until gc
        expires the entry and collects the commit. ``restorable``: the commit is still stored."""
        ref = names.session_ref(session_id)
        entries = [e for e in reversed(await self.repo.reflog(ref)) if saves or not _is_save(e.message)]
        page = entries[offset : offset + limit]
        ids = sorted({c for e in page for c in (e.old, e.new) if c is not None})
        present = set(await self.repo.backend.has_objects(ids)) if ids else set()
        head = await self.repo.head(ref)
        if head is None and not entries:
            raise NotFoundError(f"no session {session_id!r}")
        return {
            "session_id": session_id,
            "head": head.hex() if head else None,
            "total": len(entries),
            "offset": offset,
            "entries": [
                {
                    "time": iso_time(e.time_ns / 1e9),
                    "message": e.message,
                    "old": e.old.hex() if e.old else None,
                    "new": e.new.hex() if e.new else None,
                    "restorable": e.new is not None and e.new in present,
                    "old_restorable": e.old is not None and e.old in present,
                }
                for e in page
            ],
        }


def _meta(meta: dict[str, Any]) -> Any:
    """A save's metadata as the page gets it: plain JSON, folded. Most metadata is a few
    numbers and short strings (``{"step": 121, "node": "coder"}``), sent as it is; the rest
    goes through ``fold`` and ``to_json`` (typed values as ``$`` objects). Done once per
    save, so a timeline is encoded without walking 10,000 metadata dicts again."""
    for k, v in meta.items():
        t = type(v)
        if type(k) is not str or not (
            t is bool or v is None or (t is int and -(1 << 63) <= v < 1 << 64) or (t is str and len(v) <= FOLD)
        ):
            return orjson.loads(to_json(fold(meta), indent=False))
    return meta


def _is_save(message: str) -> bool:
    return message.startswith("save ")


def _commit_hex(value: str) -> bytes:
    """A commit id the page sent (64 hex digits), as bytes; InvalidKeyError otherwise."""
    if len(value) != 64 or any(ch not in "0123456789abcdefABCDEF" for ch in value):
        raise InvalidKeyError(f"expected a commit id (64 hex digits), not {value[:80]!r}")
    return bytes.fromhex(value)


__all__ = ["FOLD", "Explorer", "fold"]
