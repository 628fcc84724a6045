"""Turn a state tree into content-addressed objects, reusing the previous save where it can.

An ``Encoder`` walks one state once. Small values stay inline in their parent node as
canonical JSON; dicts and lists that grow past ``INLINE_MAX`` become nodes of their own;
long lists and big dicts are cut into content-defined runs under index nodes; large
strings and bytes become blobs, very large ones content-defined chunks.

Values are encoded as canonical MessagePack. The walk is exact for new content and
checks every value against the value domain. Content that the previous save of the same
session already encoded is recognised without per-element Python work: each run of a
long list keeps a blake3 digest of its elements' MessagePack (one C-speed
``ormsgpack.packb`` per run, which refuses every type outside the domain), and a run
whose digest is unchanged keeps its node. The caller keeps the returned ``Shadow`` for
the next save.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3
import ormsgpack

from castate.codec import chunking
from castate.codec.nodes import (
    INDEX_DICT,
    INDEX_LIST,
    NIL,
    TAG_REF,
    Special,
    encode_chunked,
    encode_index,
    encode_node,
)
from castate.codec.objects import (
    KIND_BYTES,
    KIND_CHUNK,
    KIND_CHUNKED,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_STR,
    object_id,
)
from castate.errors import UnsupportedValueError
from castate.tracking import TrackedDict, TrackedList

# An entry is how a value sits inside its parent node: (tag, payload).
INLINE = 0  # payload: canonical MessagePack of the value (no refs inside)
REF = 1  # payload: the 32-byte id of the object holding the value
Entry = tuple[int, bytes]

INLINE_MAX = 256  # a dict or list whose encoding is longer becomes a node of its own
BLOB_MIN = 2048  # a str or bytes whose encoding is longer is stored on its own
CHUNK_MIN = 65536  # a str/bytes value longer than this is content-defined chunked
MAX_DEPTH = 200  # containers nested deeper than this are refused
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
REF_WEIGHT = 40

_NIL, _TRUE, _FALSE = NIL, b"\xc3", b"\xc2"
# Hand everything outside the value domain to ``default`` (which refuses) instead of encoding it.
_STRICT = (
    ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_BIG_INT
)
# Tracked lists hold TrackedDict/TrackedList elements: digest them as plain dicts and lists.
_STRICT_TRACKED = _STRICT & ~ormsgpack.OPT_PASSTHROUGH_SUBCLASS
_pack = ormsgpack.packb
_SURROGATE = "str with a lone surrogate (not valid UTF-8)"

Default = Callable[[Any], Any]
Path = tuple[Any, ...] | None  # linked list (parent, key): built per container, formatted on error


def format_path(path: Path) -> str:
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    keys.reverse()
    if len(keys) > 12:
        keys = [*keys[:5], ..., *keys[-5:]]
    return "state" + "".join("[...]" if k is ... else f"[{k!r}]" for k in keys)


def _refuse(_value: Any) -> Any:
    raise TypeError("outside the value domain")


def run_digest(items: list[Any], tracked: bool = False) -> bytes | None:
    """blake3 of the elements' MessagePack, or None when they hold anything outside the domain."""
    try:
        return blake3.blake3(_pack(items, default=_refuse, option=_STRICT_TRACKED if tracked else _STRICT)).digest()
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return None


def map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    return b"\xde" + n.to_bytes(2, "big") if n < 65536 else b"\xdf" + n.to_bytes(4, "big")


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big")


# -- shadows: what the previous save remembers about the containers it encoded --------


@dataclass(slots=True)
class Run:
    count: int
    digest: bytes | None
    node: bytes
    closed: bool


Level = tuple[list[int], list[tuple[bytes, int]]]  # (ends of the groups closed by a cut, group (id, count)s)


@dataclass(slots=True)
class ListShadow:
    entry: Entry
    runs: list[Run]
    tail: list[Entry]  # entries of the last run when it is open (ended by the list's end)
    levels: list[Level]  # the index above the runs, bottom level first (empty for one run)
    # For a TrackedList: the list itself and its version stamps when it was encoded.
    source: Any = None
    version: int = 0
    shape: int = 0
    child: int = 0
    length: int = 0


@dataclass(slots=True)
class DictShadow:
    entry: Entry
    children: dict[str, Any]  # key -> shadow of that value, for values that have one
    source: Any = None  # for a TrackedDict: the dict itself and its version when it was encoded
    version: int = 0


@dataclass(slots=True)
class LeafShadow:
    value: str | bytes  # identity of an immutable large value confirms it is unchanged
    entry: Entry


@dataclass(slots=True)
class PackedShadow:
    packed: bytes  # the small container's MessagePack (insertion order) when it was encoded
    entry: Entry  # its inline entry


Shadow = ListShadow | DictShadow | LeafShadow | PackedShadow


class Encoder:
    """Encodes one state; collects the objects it creates in ``objects`` (id -> (kind, content))."""

    def __init__(self, default: Default | None = None) -> None:
        self.default = default
        self.objects: dict[bytes, tuple[int, bytes]] = {}
        self._memo: dict[int, tuple[Any, Entry]] = {}
        self._active: set[int] = set()

    # -- objects ------------------------------------------------------------------------

    def _put(self, kind: int, content: bytes) -> bytes:
        oid = object_id(kind, content)
        if oid not in self.objects:
            self.objects[oid] = (kind, content)
        return oid

    def encode_root(self, state: Any, shadow: Shadow | None) -> tuple[bytes, Shadow | None]:
        """The id of the root object of ``state``; the root is always an object."""
        if type(state) is not dict and type(state) is not TrackedDict:
            raise UnsupportedValueError(f"a state must be a dict, not {type(state).__name__}", "state")
        entry, new_shadow = self.encode_tracked(state, shadow, None, 0, force_node=True)
        return entry[1], new_shadow

    # -- values reached through dict keys from the root: keep shadows -------------------

    def encode_tracked(
        self, value: Any, shadow: Shadow | None, path: Path, depth: int, force_node: bool = False
    ) -> tuple[Entry, Shadow | None]:
        t = type(value)
        if type(shadow) is PackedShadow:
            # A small container that was inline last time: one C-speed encoding tells if it changed.
            packed = _packed(value)
            if packed is not None and packed == shadow.packed:
                return shadow.entry, shadow
        if t is dict or t is TrackedDict:
            entry, new = self._dict_tracked(
                value, shadow if type(shadow) is DictShadow else None, path, depth, force_node
            )
            return entry, (new if entry[0] == REF else _packed_shadow(value, entry))
        if t is list or t is TrackedList:
            entry, new = self._list_tracked(value, shadow if type(shadow) is ListShadow else None, path, depth)
            return entry, (new if entry[0] == REF else _packed_shadow(value, entry))
        if (t is str or t is bytes) and len(value) > BLOB_MIN // 2:
            if type(shadow) is LeafShadow and shadow.value is value:
                return shadow.entry, shadow
            entry = self.encode(value, path, depth)
            return entry, (LeafShadow(value, entry) if entry[0] == REF else None)
        return self.encode(value, path, depth), None

    def _dict_tracked(
        self, d: dict[Any, Any], shadow: DictShadow | None, path: Path, depth: int, force_node: bool
    ) -> tuple[Entry, Shadow | None]:
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
        tracked = type(d) is TrackedDict
        if tracked and shadow is not None and shadow.source is d and shadow.version == d._version:
            return shadow.entry, shadow  # nothing under it changed since the last save
        version = d._version if tracked else 0
        keys = self._sorted_keys(d, path)
        old = shadow.children if shadow is not None else {}
        children: dict[str, Any] = {}
        entries: list[tuple[str, Entry]] = []
        self._enter(d, path)
        for k in keys:
            entry, child = self.encode_tracked(d[k], old.get(k), (path, k), depth + 1)
            if child is not None:
                children[k] = child
            entries.append((k, entry))
        self._active.discard(id(d))
        sink, self.objects = self.objects, {}
        try:
            entry = self._dict_entry(entries, force_node)
        finally:
            made, self.objects = self.objects, sink
        if shadow is None or entry != shadow.entry:  # an unchanged node is stored already
            sink.update(made)
        if entry[0] != REF:
            return entry, None
        return entry, DictShadow(entry, children, d if tracked else None, version)

    def _list_tracked(
        self, lst: list[Any], shadow: ListShadow | None, path: Path, depth: int
    ) -> tuple[Entry, Shadow | None]:
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
        tracked = type(lst) is TrackedList
        stamps = (lst._version, lst._shape, lst._child) if tracked else (0, 0, 0)
        if tracked and shadow is not None and shadow.source is lst:
            if shadow.version == stamps[0]:
                return shadow.entry, shadow  # nothing under it changed since the last save
            if shadow.shape == stamps[1] and shadow.child == stamps[2] and len(lst) > shadow.length:
                entry, new = self._list_appended(lst, shadow, shadow.length, path, depth)
                return entry, self._stamp(new, lst, stamps)
        self._enter(lst, path)
        try:
            if shadow is None:
                entry, new = self._list_fresh(lst, path, depth, keep_shadow=True)
            else:
                entry, new = self._list_incremental(lst, shadow, path, depth)
        finally:
            self._active.discard(id(lst))
        return entry, (self._stamp(new, lst, stamps) if tracked else new)

    @staticmethod
    def _stamp(shadow: Shadow | None, lst: list[Any], stamps: tuple[int, int, int]) -> Shadow | None:
        if type(shadow) is ListShadow:
            shadow.source = lst
            shadow.version, shadow.shape, shadow.child = stamps
            shadow.length = len(lst)
        return shadow

    # -- plain values: no shadows below this point ------------------------------------

    def encode(self, value: Any, path: Path, depth: int) -> Entry:
        """The entry of any value; validates it against the value domain."""
        t = type(value)
        if t is str:
            if len(value) <= BLOB_MIN:
                try:
                    mp = _pack(value)
                except ormsgpack.MsgpackEncodeError:
                    raise UnsupportedValueError(
                        "str with a lone surrogate (not valid UTF-8)", format_path(path)
                    ) from None
                if len(mp) <= BLOB_MIN:
                    return (INLINE, mp)
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsupportedValueError(_SURROGATE, format_path(path)) from None
            return (REF, self._blob(KIND_STR, data))
        if t is int:
            if value < INT_MIN or value > INT_MAX:
                raise UnsupportedValueError("int outside the 64-bit range [-2**63, 2**64-1]", format_path(path))
            return (INLINE, _pack(value))
        if t is float:
            if not math.isfinite(value):
                raise UnsupportedValueError(f"non-finite float {value!r}", format_path(path))
            return (INLINE, _pack(value))
        if value is None:
            return (INLINE, _NIL)
        if t is bool:
            return (INLINE, _TRUE if value else _FALSE)
        if t is dict or t is list or t is TrackedDict or t is TrackedList:
            if depth >= MAX_DEPTH:
                raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
            hit = self._memo.get(id(value))
            if hit is not None and hit[0] is value:
                return hit[1]
            self._enter(value, path)
            if t is dict or t is TrackedDict:
                keys = self._sorted_keys(value, path)
                entries = [(k, self.encode(value[k], (path, k), depth + 1)) for k in keys]
                entry = self._dict_entry(entries, False)
            else:
                entry = self._list_fresh(value, path, depth, keep_shadow=False)[0]
            self._active.discard(id(value))
            self._memo[id(value)] = (value, entry)
            return entry
        if t is bytes:
            if len(value) <= BLOB_MIN:
                return (INLINE, _pack(value))
            return (REF, self._blob(KIND_BYTES, value))
        return self._convert(value, path, depth)

    def _convert(self, value: Any, path: Path, depth: int) -> Entry:
        where = format_path(path)
        if self.default is None:
            raise UnsupportedValueError(
                f"{type(value).__name__} is not supported (use dict, list, str, bytes, int, float, bool, "
                "None, or pass default= to convert it)",
                where,
            )
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError("default= keeps returning unsupported values", where)
        try:
            converted = self.default(value)
        except Exception as exc:
            raise UnsupportedValueError(f"default= could not convert {type(value).__name__}: {exc}", where) from exc
        return self.encode(converted, path, depth + 1)

    def _enter(self, container: Any, path: Path) -> None:
        key = id(container)
        if key in self._active:
            raise UnsupportedValueError("cycle: a container contains itself", format_path(path))
        self._active.add(key)

    def _sorted_keys(self, d: dict[Any, Any], path: Path) -> list[str]:
        for k in d:
            if type(k) is not str:
                raise UnsupportedValueError(f"dict key {k!r} is not a str", format_path(path))
            if not k.isascii():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    raise UnsupportedValueError(
                        f"dict key {k!r} has a lone surrogate (not valid UTF-8)", format_path(path)
                    ) from None
        return sorted(d)

    # -- strings and bytes ----------------------------------------------------------------

    def _blob(self, kind: int, data: bytes) -> bytes:
        if len(data) <= CHUNK_MIN:
            return self._put(kind, data)
        view = memoryview(data)
        chunks = [(self._put(KIND_CHUNK, bytes(view[o : o + n])), n) for o, n in chunking.chunk_spans(view)]
        return self._put(KIND_CHUNKED, encode_chunked(kind, len(data), chunks))

    # -- dicts ------------------------------------------------------------------------------

    def _dict_entry(self, entries: list[tuple[str, Entry]], force_node: bool) -> Entry:
        """Inline JSON for a small plain dict, else a dict node (cut into runs when big)."""
        plain = all(e[0] == INLINE for _, e in entries)
        if plain and not force_node:
            mp = map_header(len(entries)) + b"".join(_pack(k) + e[1] for k, e in entries)
            if len(mp) <= INLINE_MAX:
                return (INLINE, mp)
        weights = [len(_pack(k)) + _weight(e) for k, e in entries]
        if sum(weights) <= chunking.RUN_MAX:
            return (REF, self._dict_node(entries))
        hashes = [_hash32(e, k) for k, e in entries]
        ends, _ = chunking.cut(hashes, weights)
        if not ends or ends[-1] != len(entries):
            ends.append(len(entries))
        runs, start = [], 0
        for end in ends:
            runs.append((self._dict_node(entries[start:end]), end - start))
            start = end
        return (REF, self._index(INDEX_DICT, runs)[0])

    def _dict_node(self, entries: list[tuple[str, Entry]]) -> bytes:
        specials: list[Special] = []
        parts = [map_header(len(entries))]
        for i, (k, (tag, payload)) in enumerate(entries):
            parts.append(_pack(k))
            if tag == INLINE:
                parts.append(payload)
            else:
                parts.append(_NIL)
                specials.append((i, TAG_REF, payload))
        return self._put(KIND_DICT, encode_node(specials, b"".join(parts)))

    # -- lists ------------------------------------------------------------------------------

    def _list_fresh(self, lst: list[Any], path: Path, depth: int, keep_shadow: bool) -> tuple[Entry, ListShadow | None]:
        entries = [self.encode(x, (path, i), depth + 1) for i, x in enumerate(lst)]
        if all(e[0] == INLINE for e in entries):
            mp = array_header(len(entries)) + b"".join(e[1] for e in entries)
            if len(mp) <= INLINE_MAX:
                return (INLINE, mp), None
        entry, shadow = self._list_from_runs(lst, [], entries, 0, [], keep_shadow)
        return entry, shadow

    def _list_incremental(
        self, lst: list[Any], shadow: ListShadow, path: Path, depth: int
    ) -> tuple[Entry, Shadow | None]:
        n = len(lst)
        if n <= INLINE_MAX and _plain_len(lst) <= INLINE_MAX:
            return self._list_fresh(lst, path, depth, keep_shadow=True)
        runs = shadow.runs
        # Prefix: old runs whose elements are unchanged at the same offsets.
        p = k = 0
        while k < len(runs):
            c = runs[k].count
            if p + c > n or runs[k].digest is None or _digest(lst, p, p + c) != runs[k].digest:
                break
            p += c
            k += 1
        if k == len(runs):
            if p == n:
                return shadow.entry, shadow
            return self._list_appended(lst, shadow, p, path, depth)
        # Suffix: old runs whose elements are unchanged at the same distance from the end.
        q, j = n, len(runs)
        while j > k:
            c = runs[j - 1].count
            if q - c < p or runs[j - 1].digest is None or _digest(lst, q - c, q) != runs[j - 1].digest:
                break
            q -= c
            j -= 1
        # Re-cut the changed middle. A suffix run can be kept once a cut lands exactly where
        # it starts (the cutter is then in the same state as when the run was first made);
        # until then, pull the next suffix run's elements into the cut.
        pending = self._encode_slice(lst, p, q, path, depth)
        hashes = [_hash32(e) for e in pending]
        weights = [_weight(e) for e in pending]
        suffix = runs[j:]
        pos = q
        while True:
            ends, rest = chunking.cut(hashes, weights)
            if rest == 0 or not suffix:
                break
            nxt = suffix.pop(0)
            more = self._encode_slice(lst, pos, pos + nxt.count, path, depth)
            pending += more
            hashes += [_hash32(e) for e in more]
            weights += [_weight(e) for e in more]
            pos += nxt.count
        out = runs[:k] + self._make_runs(lst, p, pending, ends, True)
        if rest == 0 and suffix:
            out += suffix
            tail = shadow.tail if not out[-1].closed else []
        else:
            tail = pending[ends[-1] if ends else 0 :] if not out[-1].closed else []
        return self._assemble(out, tail, shadow.levels, k)

    def _list_appended(
        self, lst: list[Any], shadow: ListShadow, p: int, path: Path, depth: int
    ) -> tuple[Entry, ListShadow | None]:
        """Elements from ``p`` on were appended: continue the open tail run, or start after a closed one."""
        runs = shadow.runs
        new = self._encode_slice(lst, p, len(lst), path, depth)
        if runs[-1].closed:
            return self._list_from_runs(lst, runs, new, p, shadow.levels, True)
        last = runs[-1]
        return self._list_from_runs(lst, runs[:-1], shadow.tail + new, p - last.count, shadow.levels, True)

    def _encode_slice(self, lst: list[Any], a: int, b: int, path: Path, depth: int) -> list[Entry]:
        return [self.encode(lst[i], (path, i), depth + 1) for i in range(a, b)]

    def _make_runs(
        self, lst: list[Any], start: int, entries: list[Entry], ends: list[int], keep_shadow: bool
    ) -> list[Run]:
        """Run nodes for ``entries`` (elements from ``start``) cut at ``ends``; any rest is an open run."""
        runs: list[Run] = []
        s = 0
        bounds = ends if ends and ends[-1] == len(entries) else [*ends, len(entries)]
        for e in bounds:
            if e == s:
                continue
            digest = _digest(lst, start + s, start + e) if keep_shadow else None
            runs.append(Run(e - s, digest, self._list_node(entries[s:e]), closed=e in ends))
            s = e
        return runs

    def _list_from_runs(
        self,
        lst: list[Any],
        kept: list[Run],
        entries: list[Entry],
        start: int,
        old_levels: list[Level],
        keep_shadow: bool,
    ) -> tuple[Entry, ListShadow | None]:
        """Cut ``entries`` (elements from ``start``) into runs that follow the ``kept`` runs."""
        ends, rest = chunking.cut([_hash32(e) for e in entries], [_weight(e) for e in entries])
        runs = kept + self._make_runs(lst, start, entries, ends, keep_shadow)
        tail = entries[ends[-1] if ends else 0 :] if rest else []
        entry, shadow = self._assemble(runs, tail, old_levels, len(kept))
        return entry, (shadow if keep_shadow else None)

    def _assemble(
        self, runs: list[Run], tail: list[Entry], old_levels: list[Level], same: int
    ) -> tuple[Entry, ListShadow]:
        """The list's root over its runs; ``same`` leading runs are those of ``old_levels``'s list."""
        if len(runs) == 1:
            root, levels = runs[0].node, []
        else:
            root, levels = self._index(INDEX_LIST, [(r.node, r.count) for r in runs], old_levels, same)
        entry = (REF, root)
        return entry, ListShadow(entry, runs, tail, levels)

    def _list_node(self, entries: list[Entry]) -> bytes:
        specials: list[Special] = []
        parts = [array_header(len(entries))]
        for i, (tag, payload) in enumerate(entries):
            if tag == INLINE:
                parts.append(payload)
            else:
                parts.append(_NIL)
                specials.append((i, TAG_REF, payload))
        return self._put(KIND_LIST, encode_node(specials, b"".join(parts)))

    # -- index nodes --------------------------------------------------------------------------

    def _index(
        self,
        flavor: int,
        children: list[tuple[bytes, int]],
        old_levels: list[Level] | None = None,
        same: int = 0,
    ) -> tuple[bytes, list[Level]]:
        """Index levels over (child id, count) pairs until one root remains; returns it and the levels.

        With ``old_levels`` of the same list and its first ``same`` children unchanged, each
        level keeps the groups its cutter closed before the first change and re-cuts only
        from there, so an append rewrites O(log n) small nodes.
        """
        levels: list[Level] = []
        level = children
        depth = 0
        while True:
            old = old_levels[depth] if old_levels and depth < len(old_levels) else None
            keep = bisect.bisect_right(old[0], same) if old is not None and same else 0
            assert old is not None or keep == 0
            start = old[0][keep - 1] if keep else 0
            ends = old[0][:keep] if keep else []
            groups = old[1][:keep] if keep else []
            rest = level[start:]
            cuts, _ = chunking.cut([int.from_bytes(cid[:4], "little") for cid, _ in rest], [REF_WEIGHT] * len(rest))
            ends = ends + [start + c for c in cuts]
            bounds = [start + c for c in cuts]
            if not bounds or bounds[-1] != len(level):
                bounds.append(len(level))
            s = start
            for e in bounds:
                group = level[s:e]
                content = encode_index(flavor, group)
                oid = object_id(KIND_INDEX, content)
                self.objects.setdefault(oid, (KIND_INDEX, content))
                groups.append((oid, sum(c for _, c in group)))
                s = e
            levels.append((ends, groups))
            if len(groups) == 1:
                return groups[0][0], levels
            level, same, depth = groups, keep, depth + 1


def _hash32(entry: Entry, key: str | None = None) -> int:
    tag, payload = entry
    if tag == REF and key is None:
        return int.from_bytes(payload[:4], "little")
    h = blake3.blake3(bytes((tag,)))
    if key is not None:
        h.update(key.encode("utf-8"))
    h.update(payload)
    return int.from_bytes(h.digest(4), "little")


def _packed(value: Any) -> bytes | None:
    try:
        return _pack(value, default=_refuse, option=_STRICT_TRACKED)
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return None


def _packed_shadow(value: Any, entry: Entry) -> PackedShadow | None:
    packed = _packed(value)
    return None if packed is None else PackedShadow(packed, entry)


def _digest(lst: list[Any], a: int, b: int) -> bytes | None:
    return run_digest(lst[a:b], type(lst) is TrackedList)


def _plain_len(lst: list[Any]) -> int:
    """Length of a list's encoding when it holds only in-domain values, else a huge number."""
    try:
        return len(_pack(lst, default=_refuse, option=_STRICT_TRACKED if type(lst) is TrackedList else _STRICT))
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return 1 << 62


def _weight(entry: Entry) -> int:
    return len(entry[1]) + 1 if entry[0] == INLINE else REF_WEIGHT
