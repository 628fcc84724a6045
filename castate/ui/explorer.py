"""What the pages show, as JSON-ready documents built from the library: sessions and their
logs, per-save growth, diffs, one level of a state, the store's stats and maintenance record.

Every number comes from a library call (``StateManager``, ``Repository.log``,
``GrowthIndex``, ``browse.level``, ``store_stats``, ``read_runs``); this module only
gathers and labels. Nothing here knows HTTP (``castate.ui.app`` does).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from castate.cli.output import iso_time
from castate.codec import Commit
from castate.errors import InvalidKeyError, NotFoundError
from castate.repository import browse
from castate.repository import refs as names
from castate.repository.growth import Growth, GrowthIndex
from castate.repository.health import read_runs
from castate.repository.tree import Loader, entry_at, parse_pointer
from castate.state import StateManager

FOLD = 2000  # characters of a str (bytes of a bytes value) a diff sends before folding the rest
FOLD_ITEMS = 200  # items of a list a diff sends before folding the rest
MAX_CHANGES = 2000  # changes a diff sends
MAX_VALUE = 16 << 20  # bytes of a str or bytes value sent whole


def fold(value: Any) -> Any:
    """A copy of ``value`` small enough to send: long str and bytes values become
    ``{"$folded": <head>, "$length": n}`` (bytes as ``{"$bytes": base64}`` inside), long
    lists keep their head and end with ``{"$more": n}``."""
    t = type(value)
    if t is str:
        return value if len(value) <= FOLD else {"$folded": value[:FOLD], "$length": len(value)}
    if t is bytes:
        return value if len(value) <= FOLD else {"$folded": value[:FOLD], "$length": len(value)}
    if t is dict:
        return {k: fold(v) for k, v in value.items()}
    if t is list:
        head = [fold(v) for v in value[:FOLD_ITEMS]]
        return head if len(value) <= FOLD_ITEMS else [*head, {"$more": len(value) - FOLD_ITEMS}]
    return value


def _item(item: browse.Item) -> dict[str, Any]:
    return {"key": item.key, "kind": item.kind, "size": item.size, "value": item.value, "complete": item.complete}


class Explorer:
    """The documents behind the pages, over one open ``StateManager``."""

    def __init__(self, sm: StateManager) -> None:
        self.sm = sm
        self.repo = sm.repository
        self.growth = GrowthIndex(self.repo.backend)
        self._growth_lock = asyncio.Lock()

    @property
    def location(self) -> str:
        return str(self.repo.backend.location)

    # -- sessions and their histories -------------------------------------------------------------

    async def _history(self, session_id: str) -> tuple[list[tuple[bytes, Commit]], list[Growth]]:
        """The session's saves, oldest first, with the growth of each."""
        entries = await self.repo.log(names.session_ref(session_id))
        if not entries:
            raise NotFoundError(f"no session {session_id!r}")
        entries.reverse()
        async with self._growth_lock:
            growth = await self.growth.history([cid for cid, _ in entries])
        return entries, growth

    async def sessions(self) -> dict[str, Any]:
        rows = []
        for s in await self.sm.list_sessions():
            entries, growth = await self._history(s.session_id)
            rows.append(
                {
                    "session_id": s.session_id,
                    "updated": iso_time(s.timestamp),
                    "timestamp": s.timestamp,
                    "saves": len(entries),
                    "checkpoints": s.checkpoint_count,
                    "logical_bytes": growth[-1].logical_bytes,
                    "stored_bytes": sum(g.new_bytes for g in growth),
                    "head": s.head,
                    "paused": s.paused,
                    "older_history_removed": bool(entries[0][1].parents),
                }
            )
        return {"sessions": rows}

    async def timeline(self, session_id: str) -> dict[str, Any]:
        entries, growth = await self._history(session_id)
        own_ref = names.session_ref(session_id)
        index = {cid: i for i, (cid, _) in enumerate(entries)}
        points: list[dict[str, Any]] = [
            {
                "commit": cid.hex(),
                "time": iso_time(c.time_ns / 1e9),
                "time_ns": c.time_ns,
                "session": c.session,
                "name": c.name,
                "meta": fold(c.meta),
                "parents": [p.hex() for p in c.parents],
                "new_objects": g.new_objects,
                "new_bytes": g.new_bytes,
                "logical_bytes": g.logical_bytes,
                "complete": g.complete,
                "checkpoints": [],
                "marks": [],
            }
            for (cid, c), g in zip(entries, growth, strict=True)
        ]

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
                points[at]["checkpoints"].append(label)

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
                points[index[e.new]]["marks"].append({**mark, "time": iso_time(e.time_ns / 1e9)})
        return {
            "session_id": session_id,
            "points": points,
            "stored_bytes": sum(g.new_bytes for g in growth),
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

    async def diff(self, a: str, b: str) -> dict[str, Any]:
        ra, rb = await self._revision(a), await self._revision(b)
        changes = await self.sm.diff(a, b)
        counts = {op: sum(1 for c in changes if c.op == op) for op in ("add", "remove", "replace")}
        ra.pop("root")
        rb.pop("root")
        return {
            "a": ra,
            "b": rb,
            "total": len(changes),
            "counts": counts,
            "changes": [fold(c.to_dict()) for c in changes[:MAX_CHANGES]],
            "truncated": len(changes) > MAX_CHANGES,
        }

    async def tree(self, rev: str, path: str, offset: int, limit: int) -> dict[str, Any]:
        r = await self._revision(rev)
        root = r.pop("root")
        node = await browse.level(
            Loader(self.repo.backend), root, parse_pointer(path), offset=offset, limit=min(limit, 1000)
        )
        if isinstance(node, browse.Level):
            body = {
                "kind": node.kind,
                "total": node.total,
                "offset": node.offset,
                "items": [_item(i) for i in node.items],
            }
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
            raise InvalidKeyError(f"{path or '/'} holds a {item.kind}: open it as a tree")
        if item.size is not None and item.size > MAX_VALUE:
            raise InvalidKeyError(
                f"{path} is {item.size} bytes, too large to show whole here; use `castate show {rev} --path {path}`"
            )
        (value,) = await loader.values([entry])
        return {**r, "path": path, "kind": item.kind, "value": value}

    # -- the store -----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        stats = await self.sm.stats(top=0)
        runs = await read_runs(self.repo)
        last = {op: next((r for r in reversed(runs) if r.get("op") == op), None) for op in ("gc", "fsck")}
        return {
            "now": {
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
            },
            "last_gc": last["gc"],
            "last_fsck": last["fsck"],
            "runs": runs,
        }

    # -- actions (only served with --allow-writes) ---------------------------------------------

    async def restore(self, source: str, session_id: str | None) -> dict[str, Any]:
        return (await self.sm.restore_into_session(source, session_id or None)).to_dict()

    async def fork(self, source: str, new_session_id: str) -> dict[str, Any]:
        return {"session_id": new_session_id, "head": await self.sm.fork(source, new_session_id)}

    async def checkpoint(self, session_id: str, name: str) -> dict[str, Any]:
        return {"checkpoint_id": await self.sm.create_checkpoint(session_id, name)}


__all__ = ["Explorer", "fold"]
