"""Structural diff between two stored states, at a cost that grows with the change.

Two entries with the same object id hold the same value, so the diff never opens them.
A big dict is an index over runs of keys: runs present on both sides cancel by id and only
the rest are opened. A long list is an index over runs of items: the two sides' run ids
are aligned (``difflib.SequenceMatcher``), matching runs are skipped, and only the gaps
between them are opened, level by level, down to the items. Appending k items to a
10,000-item list therefore reads a few nodes and yields k ``add`` changes.

Dicts keep their key order. A dict's changes list its removed keys first, then the rest in
its new key order, so that applied in order (a removed key leaves, an added key goes last)
they give the new order; when no such list can (a key moved), the dict is one "replace".
A move inside a big dict whose unchanged runs cancel is not seen (those runs are not read).

Changes are listed in the order they apply: list positions are those of the list as the
earlier changes left it, as in an RFC 6902 JSON Patch (``to_patch``).
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from castate.backends.base import Backend
from castate.codec.encoder import typed_key
from castate.codec.nodes import parse_index
from castate.codec.objects import KIND_INDEX, KIND_LIST
from castate.errors import CorruptObjectError
from castate.repository.tree import (
    Entry,
    Loader,
    Ref,
    dict_entries,
    entry_shape,
    list_entries,
    pointer,
    same_entry,
    shape,
)

Op = Literal["add", "remove", "replace"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: at ``path`` (a JSON pointer), ``op`` turns ``old`` into ``new``.

    ``old`` is unset (None) for "add" and ``new`` for "remove".
    """

    op: Op
    path: str
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.op != "add":
            out["old"] = self.old
        if self.op != "remove":
            out["new"] = self.new
        return out


def to_patch(changes: Sequence[Change]) -> list[dict[str, Any]]:
    """The changes as an RFC 6902 JSON Patch (a list of operations, applied in order)."""
    out: list[dict[str, Any]] = []
    for c in changes:
        if c.op == "remove":
            out.append({"op": "remove", "path": c.path})
        else:
            out.append({"op": c.op, "path": c.path, "value": c.new})
    return out


@dataclass(slots=True)
class _Raw:
    """A change whose values are still entries (refs are materialized at the end, in one walk)."""

    op: Op
    path: tuple[str | int, ...]
    old: Entry = None
    new: Entry = None


@dataclass(slots=True)
class _Seg:
    """Part of a list: a stored run or index (``oid``) with its item count, or loaded items."""

    oid: bytes | None
    count: int
    items: list[Entry] | None = None


class Differ:
    """Computes the changes between two trees; ``loader.read`` counts the objects it read."""

    def __init__(self, backend: Backend) -> None:
        self.loader = Loader(backend)

    async def diff(self, root_a: bytes, root_b: bytes) -> list[Change]:
        raw = await self.compare((), Ref(root_a), Ref(root_b))
        entries = [e for r in raw for e in (r.old, r.new)]
        values = await self.loader.values(entries)
        out = []
        for i, r in enumerate(raw):
            old, new = values[2 * i], values[2 * i + 1]
            out.append(Change(r.op, pointer(r.path), old if r.op != "add" else None, new if r.op != "remove" else None))
        return out

    # -- values -------------------------------------------------------------------------------

    async def _shape(self, entry: Entry) -> str:
        what = entry_shape(entry)
        if what is None:
            kind, content = await self.loader.get(entry.id)
            what = shape(kind, content)
        return what

    async def compare(self, path: tuple[str | int, ...], a: Entry, b: Entry) -> list[_Raw]:
        if same_entry(a, b):
            return []
        sa, sb = await asyncio.gather(self._shape(a), self._shape(b))
        if sa == sb == "dict":
            return await self._dicts(path, a, b)
        if sa == sb == "list":
            return await self._lists(path, a, b)
        return [_Raw("replace", path, a, b)]

    # -- dicts --------------------------------------------------------------------------------

    async def _dict_leaves(self, a: Entry, b: Entry) -> tuple[dict[str, Entry], dict[str, Entry], bool]:
        """The entries of both dicts, minus every run the two share (keys are unique in a
        dict, so a run with the same id on both sides holds the same keys and values), each in
        its key order, and whether no run was shared (then both sides are whole)."""
        ea: dict[str, Entry] = {} if type(a) is Ref else dict(a)
        eb: dict[str, Entry] = {} if type(b) is Ref else dict(b)
        pa = [a.id] if type(a) is Ref else []
        pb = [b.id] if type(b) is Ref else []
        whole = True
        while pa or pb:  # level by level, each in order: the runs of a dict sit at one depth
            common = set(pa) & set(pb)
            if common:
                whole = False
                pa = [oid for oid in pa if oid not in common]
                pb = [oid for oid in pb if oid not in common]
            got = await self.loader.get_many([*pa, *pb])
            below: tuple[list[bytes], list[bytes]] = ([], [])
            for pending, out, nxt in ((pa, ea, below[0]), (pb, eb, below[1])):
                for oid in pending:
                    kind, content = got[oid]
                    if kind == KIND_INDEX:
                        nxt.extend(c for c, _ in parse_index(oid, content)[1])
                    else:
                        out.update(dict_entries(oid, kind, content))
            pa, pb = below
        return ea, eb, whole

    async def _dicts(self, path: tuple[str | int, ...], a: Entry, b: Entry) -> list[_Raw]:
        ea, eb, whole = await self._dict_leaves(a, b)
        # Removed keys first (in their old order), then the rest in the new key order, so the
        # adds, applied in order, append the new keys in the order the new dict has them.
        out = [_Raw("remove", (*path, key), ea[key]) for key in ea if key not in eb]
        nested = []
        for key in eb:
            if key not in ea:
                out.append(_Raw("add", (*path, key), None, eb[key]))
            elif not same_entry(ea[key], eb[key]):
                nested.append(key)
        if whole and [k for k in ea if k in eb] + [k for k in eb if k not in ea] != list(eb):
            # A key moved: no list of per-key changes gives the new order (JSON Patch cannot
            # move a key inside an object), so the dict is replaced as a whole.
            return [_Raw("replace", path, a, b)]
        for part in await asyncio.gather(*(self.compare((*path, k), ea[k], eb[k]) for k in nested)):
            out.extend(part)
        order: dict[str | int, int] = {k: i for i, k in enumerate([k for k in ea if k not in eb] + list(eb))}
        out.sort(key=lambda r: order[r.path[len(path)]])  # stable: each key's changes stay together
        return out

    # -- lists --------------------------------------------------------------------------------

    async def _segments(self, entry: Entry) -> list[_Seg]:
        if type(entry) is list:
            return [_Seg(None, len(entry), list(entry))]
        return await self._expand([_Seg(entry.id, -1)])

    async def _expand(self, segs: list[_Seg]) -> list[_Seg]:
        """Open every unopened segment one level: an index becomes its children, a run its items."""
        todo = [s.oid for s in segs if s.items is None and s.oid is not None]
        got = await self.loader.get_many(todo) if todo else {}
        out: list[_Seg] = []
        for s in segs:
            if s.items is not None or s.oid is None:
                out.append(s)
                continue
            kind, content = got[s.oid]
            if kind == KIND_INDEX:
                out.extend(_Seg(c, n) for c, n in parse_index(s.oid, content)[1])
            elif kind == KIND_LIST:
                out.append(_Seg(s.oid, -1, list_entries(s.oid, kind, content)))
            else:
                raise CorruptObjectError(s.oid.hex(), "a list index points at something that is not a list")
        for s in out:
            if s.items is not None:
                s.count = len(s.items)
        return out

    async def _lists(self, path: tuple[str | int, ...], a: Entry, b: Entry) -> list[_Raw]:
        sa, sb = await asyncio.gather(self._segments(a), self._segments(b))
        return await self._align(path, 0, sa, sb)

    async def _align(self, path: tuple[str | int, ...], pos: int, sa: list[_Seg], sb: list[_Seg]) -> list[_Raw]:
        """Changes turning segments ``sa`` into ``sb``, which start at list position ``pos``."""
        ka = [s.oid if s.oid is not None else ("a", i) for i, s in enumerate(sa)]
        kb = [s.oid if s.oid is not None else ("b", i) for i, s in enumerate(sb)]
        matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
        jobs = []
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                jobs.append(self._gap(path, pos, sa[i1:i2], sb[j1:j2]))
            pos += sum(s.count for s in sb[j1:j2])
        out: list[_Raw] = []
        for part in await asyncio.gather(*jobs):
            out.extend(part)
        return out

    async def _gap(self, path: tuple[str | int, ...], pos: int, ga: list[_Seg], gb: list[_Seg]) -> list[_Raw]:
        if all(s.items is not None for s in ga) and all(s.items is not None for s in gb):
            items_a = [e for s in ga for e in s.items or ()]
            items_b = [e for s in gb for e in s.items or ()]
            return await self._items(path, pos, items_a, items_b)
        ga, gb = await asyncio.gather(self._expand(ga), self._expand(gb))
        return await self._align(path, pos, ga, gb)

    async def _items(self, path: tuple[str | int, ...], pos: int, a: list[Entry], b: list[Entry]) -> list[_Raw]:
        matcher = difflib.SequenceMatcher(None, [_key(e) for e in a], [_key(e) for e in b], autojunk=False)
        jobs: list[Any] = []
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                pos += j2 - j1
                continue
            n = min(i2 - i1, j2 - j1)
            for k in range(n):
                jobs.append(self.compare((*path, pos + k), a[i1 + k], b[j1 + k]))
            # Remove the extra old items from the last one back, so each path is where that item is.
            removes = [_Raw("remove", (*path, pos + n + k), a[i1 + n + k]) for k in reversed(range(i2 - i1 - n))]
            adds = [_Raw("add", (*path, pos + n + k), None, b[j1 + n + k]) for k in range(j2 - j1 - n)]
            jobs.append(_done(removes + adds))
            pos += j2 - j1
        out: list[_Raw] = []
        for part in await asyncio.gather(*jobs):
            out.extend(part)
        return out


async def _done(value: list[_Raw]) -> list[_Raw]:
    return value


def _key(entry: Entry) -> Any:
    if type(entry) is Ref:
        return entry.id
    return (0, typed_key(entry) or repr(entry).encode())


async def diff_trees(backend: Backend, root_a: bytes, root_b: bytes) -> list[Change]:
    """The changes that turn the state under ``root_a`` into the state under ``root_b``."""
    return await Differ(backend).diff(root_a, root_b)


__all__ = ["Change", "Differ", "diff_trees", "to_patch"]
