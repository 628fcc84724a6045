"""Turn a state tree into content-addressed objects, reusing the previous save where it can.

An ``Encoder`` walks one state once. Small values stay inline in their parent node as
canonical JSON; dicts and lists that grow past ``INLINE_MAX`` become nodes of their own;
long lists and big dicts are cut into content-defined runs under index nodes; large
strings and bytes become blobs, very large ones content-defined chunks.

Values are encoded as canonical MessagePack. The walk is exact for new content and
checks every value against the value domain. Content that the previous save of the same
session already encoded is recognised without per-element Python work: each run of a
long list or big dict keeps a blake3 digest of its elements' MessagePack (one C-speed
``ormsgpack.packb`` per run, which refuses every type outside the domain), and a run
whose digest is unchanged keeps its node. The caller keeps the returned ``Shadow`` for
the next save.

Runs are content-defined and the cutter restarts at every cut, so after a front trim,
an insert or an edit the old runs come back unchanged once a cut lands where one of them
starts. A list whose runs no longer line up at their old offsets is realigned: hints
(the identities of the elements the previous save saw, or a tracked list's counters)
propose offsets, digests confirm them, and the cutter is replayed from the list's start,
keeping each confirmed run whole when it reaches a cut exactly at its start. Only the
elements between confirmed runs are encoded in Python, except that the remnant of a
front-trimmed first run reuses the entries it had. A big dict is realigned the same way
over its keys in insertion order, where a run is found again by its first key.

Dicts keep their insertion order: entries, inline maps and runs follow it, so a dict with
the same items in another order is another value with another id (as ``list(d)`` tells).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

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
    encode_typed,
)
from castate.codec.objects import (
    KIND_BYTES,
    KIND_CHUNK,
    KIND_CHUNKED,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_STR,
    KIND_TYPED,
    PLAIN,
    Ids,
)
from castate.codec.tracking import TrackedDict, TrackedList
from castate.codec.types import (
    CANONICAL_NAN,
    CONTAINER_TYPES,
    EXT_NDARRAY,
    EXT_TUPLE,
    EXT_USER,
    SCALARS,
    ndarray_state,
    ndarray_type,
    registered,
)
from castate.errors import UnsupportedValueError

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
# Packs TrackedDict/TrackedList as plain dicts and lists, and every other subclass so too: only
# for sizing (`_maybe_inline`), never to decide that a value is in the domain (see `_untrack`).
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


# Counts, per thread, the mutable typed values (tuples, sets, registered types other than
# enums, values converted by default=) that encodings and digests met. Tracked containers
# change their version only when they themselves change, not when such a value inside them
# is mutated in place, so a tracked container whose save met one is not skipped by version.
_tl = threading.local()


def _touch() -> None:
    _tl.n = getattr(_tl, "n", 0) + 1


def _touched() -> int:
    n: int = getattr(_tl, "n", 0)
    return n


def _typed_default(value: Any) -> Any:
    """ormsgpack's ``default`` for digests and packed shadows: a typed value as an ext value
    that tells it from every other value (its type code and exact body); TypeError otherwise."""
    t = type(value)
    try:
        scalar = SCALARS.get(t)
        if scalar is not None:
            return ormsgpack.Ext(scalar[0], scalar[1](value))
        code = CONTAINER_TYPES.get(t)
        if code is not None:
            _touch()
            return ormsgpack.Ext(code, _pack(list(value), default=_typed_default, option=_STRICT))
        if t is ndarray_type():
            _touch()
            return ormsgpack.Ext(EXT_NDARRAY, _pack(ndarray_state(value)))
        user = registered(t)
        if user is not None:
            if user.mutable:
                _touch()
            state = [user.name, user.to_state(value)]
            return ormsgpack.Ext(EXT_USER, _pack(state, default=_typed_default, option=_STRICT))
    except Exception as exc:  # whatever fails here fails again, with a message, when encoded
        raise TypeError(str(exc)) from None
    raise TypeError("outside the value domain")


def _untrack(value: Any) -> Any:
    """``default`` for packing a tracked state under ``_STRICT``: castate's own TrackedDict and
    TrackedList as the plain dict and list they stand for, typed values as ``_typed_default``
    has them, and any other subclass (``OrderedDict``, a ``str`` subclass...) refused, as a
    fresh encoding refuses it. A comparison that packed subclasses as their base type accepted
    them whenever their content equalled the previous save's."""
    t = type(value)
    if t is TrackedDict:
        return dict(value)
    if t is TrackedList:
        return list(value)
    return _typed_default(value)


def _stamps(lst: TrackedList) -> tuple[int, int, int, int, int]:
    """A tracked list's change counters: version, shape, child, front trims, appends."""
    return lst._version, lst._shape, lst._child, lst._front, lst._appended


def run_digest(items: list[Any], tracked: bool = False) -> bytes | None:
    """blake3 of the elements' MessagePack, or None when they hold anything outside the domain."""
    try:
        return blake3.blake3(_pack(items, default=_untrack if tracked else _typed_default, option=_STRICT)).digest()
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
class DictRun:
    """One run of a big dict: consecutive keys in insertion order."""

    first: str  # its first key: where the run is looked for among the next save's keys
    count: int
    weight: int  # the sum of its entries' weights (a dict of at most RUN_MAX is one node)
    digest: bytes | None  # blake3 of the MessagePack of [keys, values]
    node: bytes
    closed: bool
    children: dict[str, Any]  # key -> shadow of that value, for values that have one


@dataclass(slots=True)
class ListShadow:
    entry: Entry
    runs: list[Run]
    tail: list[Entry]  # entries of the last run when it is open (ended by the list's end)
    levels: list[Level]  # the index above the runs, bottom level first (empty for one run)
    # Entries of the first run when this process made them: a front trim inside that run
    # re-cuts its remnant from these instead of encoding the remnant's elements again.
    head: list[Entry] | None = None
    # A shallow copy of the list as it was encoded: all of it for a plain list, the first
    # run for a tracked one. Identities in it are only hints for finding where old runs went
    # (the copy keeps the elements alive, so no other object can take their ids); its first
    # run's elements let a remnant be checked against that run's digest after a front trim.
    items: list[Any] | None = None
    # For a TrackedList: the list itself and its stamps and counters when it was encoded.
    source: Any = None
    volatile: bool = False  # it held a mutable typed value: never skipped by its stamps
    version: int = 0
    shape: int = 0
    child: int = 0
    front: int = 0
    appended: int = 0
    length: int = 0


@dataclass(slots=True)
class DictShadow:
    entry: Entry
    children: dict[str, Any]  # key -> shadow of that value, for values that have one (unless runs)
    source: Any = None  # for a TrackedDict: the dict itself and its version when it was encoded
    version: int = 0
    runs: list[DictRun] | None = None  # a dict cut into runs: its runs, which hold the children
    levels: list[Level] = field(default_factory=list)  # the index above the runs
    volatile: bool = False  # it held a mutable typed value: never skipped by its version


@dataclass(slots=True)
class LeafShadow:
    value: str | bytes  # identity of an immutable large value confirms it is unchanged
    entry: Entry


@dataclass(slots=True)
class PackedShadow:
    packed: bytes  # the small container's MessagePack (insertion order) when it was encoded
    entry: Entry  # its inline entry


Shadow = ListShadow | DictShadow | LeafShadow | PackedShadow


R = TypeVar("R")
Item = TypeVar("Item")


class _Recut(Generic[Item, R]):
    """The cutter replayed over a container's entries from its start, as a fresh encoding runs it.

    ``feed`` cuts entries into new runs exactly as ``chunking.cut`` would; ``keep`` puts an
    old run in whole, which is exact only when nothing is pending (the cutter is at a cut,
    its running weight is 0) and the run's entries are the old ones (its digest matched):
    from a cut, the same entries meet the same cuts, so the fresh encoding would make that
    very node. ``pos`` is the position of the next entry, ``start`` that of ``pend[0]``.
    """

    __slots__ = ("head", "hw", "make", "pend", "pos", "runs", "start", "total", "w")

    def __init__(
        self,
        hw: Callable[[list[Item]], tuple[list[int], list[int]]],
        make: Callable[[int, int, list[Item], bool, int], R],
    ) -> None:
        self.hw = hw  # entries -> (hash32s, weights)
        self.make = make  # (start, end, entries, closed, weight) -> run
        self.runs: list[R] = []
        self.head: list[Item] | None = None  # entries of runs[0], when known
        self.pend: list[Item] = []
        self.w = 0
        self.start = self.pos = 0
        self.total = 0  # the weight of every entry so far

    def feed(self, items: list[Item]) -> None:
        if not items:
            return
        hashes, weights = self.hw(items)
        ends, rest = chunking.cut(hashes, weights, self.w)
        carry, s = self.w, 0
        for e in ends:
            self.pend += items[s:e]
            self._close(carry + sum(weights[s:e]), True)
            carry, s = 0, e
        self.pend += items[s:]
        self.w = rest
        self.pos += len(items)

    def keep(self, run: R, count: int, entries: list[Item] | None, weight: int = 0) -> None:
        assert not self.pend
        if not self.runs:
            self.head = entries
        self.runs.append(run)
        self.pos += count
        self.start = self.pos
        self.total += weight

    def _close(self, weight: int, closed: bool, run: R | None = None) -> None:
        pend = self.pend
        end = self.start + len(pend)
        if run is None:
            run = self.make(self.start, end, pend, closed, weight)
        if not self.runs:
            self.head = pend
        self.runs.append(run)
        self.start = end
        self.pend = []
        self.total += weight

    def finish(self, reuse: R | None = None) -> tuple[list[R], list[Item]]:
        """The runs, and the entries of the last one if it is open; ``reuse`` is that run's old node."""
        tail = self.pend
        if tail:
            self._close(self.w, False, reuse)
        return self.runs, tail


class Encoder:
    """Encodes one state; collects the objects it creates in ``objects`` (id -> (kind, content)).

    ``encoded`` counts the list elements and dict values this encoder walked one by one in
    Python (those that no shadow let it skip): a measure of a save's work that tests read.
    """

    def __init__(self, default: Default | None = None, ids: Ids = PLAIN) -> None:
        self.default = default
        self._object_id = ids.object_id
        self.objects: dict[bytes, tuple[int, bytes]] = {}
        self.encoded = 0
        self._memo: dict[int, tuple[Any, Entry]] = {}
        self._active: set[int] = set()

    # -- objects ------------------------------------------------------------------------

    def _put(self, kind: int, content: bytes) -> bytes:
        oid = self._object_id(kind, content)
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
        mark = _touched()
        entry, new = self._dict_walk(d, shadow, path, depth, force_node)
        if type(new) is DictShadow and new is not shadow:
            new.volatile = _touched() != mark
        return entry, new

    def _dict_walk(
        self, d: dict[Any, Any], shadow: DictShadow | None, path: Path, depth: int, force_node: bool
    ) -> tuple[Entry, Shadow | None]:
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
        tracked = type(d) is TrackedDict
        version = cast(TrackedDict, d)._version if tracked else 0
        if tracked and shadow is not None and shadow.source is d and shadow.version == version and not shadow.volatile:
            return shadow.entry, shadow  # nothing under it changed since the last save
        source = d if tracked else None
        keys = self._keys(d, path)
        old: dict[str, Any] = {}
        if shadow is not None and shadow.runs is not None:
            # A big dict last time: find its runs again among the keys; None if it is no longer big.
            self._enter(d, path)
            try:
                found = self._dict_realign(d, keys, shadow, path, depth)
            finally:
                self._active.discard(id(d))
            if found is not None:
                entry, kept, kept_levels = found
                return entry, DictShadow(entry, {}, source, version, kept, kept_levels)
            for run in shadow.runs:
                old.update(run.children)
        elif shadow is not None:
            old = shadow.children
        children: dict[str, Any] = {}
        entries: list[tuple[str, Entry]] = []
        self._enter(d, path)
        self.encoded += len(keys)
        for k in keys:
            entry, child = self.encode_tracked(d[k], old.get(k), (path, k), depth + 1)
            if child is not None:
                children[k] = child
            entries.append((k, entry))
        self._active.discard(id(d))
        sink, self.objects = self.objects, {}
        try:
            entry, runs, levels = self._dict_entry(entries, force_node, (d, keys, children))
        finally:
            made, self.objects = self.objects, sink
        if shadow is None or entry != shadow.entry:  # an unchanged node is stored already
            sink.update(made)
        if entry[0] != REF:
            return entry, None
        if runs is not None:
            return entry, DictShadow(entry, {}, source, version, runs, levels)
        return entry, DictShadow(entry, children, source, version)

    def _dict_realign(
        self, d: dict[str, Any], keys: list[str], shadow: DictShadow, path: Path, depth: int
    ) -> tuple[Entry, list[DictRun], list[Level]] | None:
        """A big dict against the runs of its last save: runs whose keys and values digest as
        they did are kept, the keys between them are encoded; None if it is now one node."""
        runs = shadow.runs
        assert runs is not None
        n = len(keys)
        tracked = type(d) is TrackedDict
        get = d.__getitem__
        found: list[tuple[int, DictRun]] = []
        lo = 0
        where = dict(zip(keys, range(n), strict=True))  # key -> its position in insertion order
        for run in runs:
            if run.digest is None:
                continue
            a = where.get(run.first, -1)
            b = a + run.count
            if a >= lo and b <= n and _dict_digest(keys, get, a, b, tracked) == run.digest:
                found.append((a, run))
                lo = b
        if (
            len(found) == len(runs)
            and lo == n
            and found[0][0] == 0
            and all(found[i][0] + found[i][1].count == found[i + 1][0] for i in range(len(found) - 1))
        ):
            return shadow.entry, runs, shadow.levels  # every key and value as it was
        old: dict[str, Any] = {}
        kept = {id(run) for _, run in found}
        for run in runs:
            if id(run) not in kept:
                old.update(run.children)
        nodes: dict[bytes, tuple[int, bytes]] = {}
        cut = self._dict_cutter(d, keys, nodes)
        for a, run in found:
            if cut.pos < a:
                cut.feed(self._dict_items(d, keys, cut.pos, a, old, path, depth))
            if not cut.pend and (run.closed or a + run.count == n):
                cut.keep(run, run.count, None, run.weight)
            else:
                cut.feed(self._dict_items(d, keys, a, a + run.count, run.children, path, depth))
        if cut.pos < n:
            cut.feed(self._dict_items(d, keys, cut.pos, n, old, path, depth))
        out, _ = cut.finish()
        if cut.total <= chunking.RUN_MAX:
            return None  # one node now: the caller encodes it whole (the new run nodes are dropped)
        self.objects.update(nodes)
        same = _same_prefix([(r.node, r.count) for r in out], [(r.node, r.count) for r in runs])
        root, levels = self._index(INDEX_DICT, [(r.node, r.count) for r in out], shadow.levels, same)
        return (REF, root), out, levels

    def _dict_items(
        self, d: dict[str, Any], keys: list[str], a: int, b: int, old: dict[str, Any], path: Path, depth: int
    ) -> list[tuple[str, Entry, Any]]:
        """(key, entry, shadow) of the keys ``keys[a:b]``, encoded against their old shadows."""
        self.encoded += b - a
        out = []
        for k in keys[a:b]:
            entry, child = self.encode_tracked(d[k], old.get(k), (path, k), depth + 1)
            out.append((k, entry, child))
        return out

    def _dict_cutter(
        self, d: dict[str, Any], keys: list[str], nodes: dict[bytes, tuple[int, bytes]]
    ) -> _Recut[tuple[str, Entry, Any], DictRun]:
        """A cutter over (key, entry, shadow) items of ``d`` whose run nodes go to ``nodes``."""
        tracked = type(d) is TrackedDict
        get = d.__getitem__

        def make(start: int, end: int, items: list[tuple[str, Entry, Any]], closed: bool, weight: int) -> DictRun:
            sink, self.objects = self.objects, nodes
            try:
                node = self._dict_node([(k, e) for k, e, _ in items])
            finally:
                self.objects = sink
            children = {k: c for k, _, c in items if c is not None}
            digest = _dict_digest(keys, get, start, end, tracked)
            return DictRun(items[0][0], end - start, weight, digest, node, closed, children)

        return _Recut(_dict_hw, make)

    def _list_tracked(
        self, lst: list[Any], shadow: ListShadow | None, path: Path, depth: int
    ) -> tuple[Entry, Shadow | None]:
        mark = _touched()
        entry, new = self._list_walk(lst, shadow, path, depth)
        if type(new) is ListShadow:
            new.volatile = _touched() != mark
        return entry, new

    def _list_walk(
        self, lst: list[Any], shadow: ListShadow | None, path: Path, depth: int
    ) -> tuple[Entry, Shadow | None]:
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
        tracked = type(lst) is TrackedList
        stamps = _stamps(cast(TrackedList, lst)) if tracked else (0, 0, 0, 0, 0)
        new: Shadow | None
        if tracked and shadow is not None and shadow.source is lst and not shadow.volatile:
            if shadow.version == stamps[0]:
                return shadow.entry, shadow  # nothing under it changed since the last save
            if shadow.shape == stamps[1] and shadow.child == stamps[2]:
                # Only appends and front trims since the last save, and no element changed:
                # the list is the saved one without its first k elements, plus what came.
                k = stamps[3] - shadow.front
                added = stamps[4] - shadow.appended
                if len(lst) == shadow.length - k + added:  # the counters agree with the list
                    if k == 0 and added == 0:  # only no-ops (``extend([])``): the saved list
                        return shadow.entry, self._stamp(shadow, lst, stamps)
                    if k == 0:
                        entry, new = self._list_appended(lst, shadow, shadow.length, path, depth)
                        return entry, self._stamp(new, lst, stamps)
                    self._enter(lst, path)
                    try:
                        entry, new = self._list_trimmed(lst, shadow, k, path, depth)
                    finally:
                        self._active.discard(id(lst))
                    return entry, self._stamp(new, lst, stamps)
        self._enter(lst, path)
        try:
            if shadow is None:
                entry, new = self._list_fresh(lst, path, depth, keep_shadow=True)
            else:
                entry, new = self._list_incremental(lst, shadow, path, depth)
        finally:
            self._active.discard(id(lst))
        if tracked:
            return entry, self._stamp(new, lst, stamps)
        if type(new) is ListShadow:
            new.items = lst[:]  # a C-speed copy: the identities the next save's hints look for
        return entry, new

    @staticmethod
    def _stamp(shadow: Shadow | None, lst: list[Any], stamps: tuple[int, int, int, int, int]) -> Shadow | None:
        if type(shadow) is ListShadow:
            shadow.source = lst
            shadow.version, shadow.shape, shadow.child, shadow.front, shadow.appended = stamps
            shadow.length = len(lst)
            shadow.items = lst[: shadow.runs[0].count]  # the counters are the hints: keep the first run only
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
            if value != value:  # every NaN is stored as one canonical NaN
                return (INLINE, CANONICAL_NAN)
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
                keys = self._keys(value, path)
                entries = [(k, self.encode(value[k], (path, k), depth + 1)) for k in keys]
                entry = self._dict_entry(entries, False)[0]
            else:
                entry = self._list_fresh(value, path, depth, keep_shadow=False)[0]
            self._active.discard(id(value))
            self._memo[id(value)] = (value, entry)
            return entry
        if t is bytes:
            if len(value) <= BLOB_MIN:
                return (INLINE, _pack(value))
            return (REF, self._blob(KIND_BYTES, value))
        return self._typed(value, t, path, depth)

    def _typed(self, value: Any, t: type, path: Path, depth: int) -> Entry:
        """The entry of a typed value: an ext value inline, or a ``T`` object around the
        object of its inner value (format.md §1.7); other types go to ``default=``."""
        scalar = SCALARS.get(t)
        if scalar is not None:
            try:
                return (INLINE, _pack(ormsgpack.Ext(scalar[0], scalar[1](value))))
            except ValueError as exc:
                raise UnsupportedValueError(f"{t.__name__}: {exc}", format_path(path)) from None
        code = CONTAINER_TYPES.get(t)
        user = registered(t) if code is None else None
        if code is None and user is None:
            if t is not ndarray_type():
                return self._convert(value, path, depth)
            return self._ndarray(value, path, depth)
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
        self._enter(value, path)
        try:
            if user is None:
                _touch()
                entries = [self.encode(x, (path, i), depth + 1) for i, x in enumerate(value)]
                if code != EXT_TUPLE:
                    entries.sort()  # canonical order: equal sets get equal ids
                inner = self._list_of(entries)
                name = None
            else:
                if user.mutable:
                    _touch()
                try:
                    state = user.to_state(value)
                except Exception as exc:
                    raise UnsupportedValueError(
                        f"to_state of registered type {user.name!r} failed: {exc}", format_path(path)
                    ) from exc
                inner = self.encode(state, path, depth + 1)
                code, name = EXT_USER, user.name
        finally:
            self._active.discard(id(value))
        assert code is not None
        tag, payload = inner
        if tag == INLINE:
            data = payload if name is None else b"\x92" + _pack(name) + payload
            return (INLINE, _pack(ormsgpack.Ext(code, data)))
        return (REF, self._put(KIND_TYPED, encode_typed(code, payload, name)))

    def _ndarray(self, value: Any, path: Path, depth: int) -> Entry:
        """A numpy array: ``[dtype, shape, data]`` as a list, its data a bytes value (a blob,
        content-defined chunks when large, so an appended row rewrites only the last chunks)."""
        _touch()
        try:
            state = ndarray_state(value)
        except ValueError as exc:
            raise UnsupportedValueError(str(exc), format_path(path)) from None
        tag, payload = self.encode(state, path, depth + 1)
        if tag == INLINE:
            return (INLINE, _pack(ormsgpack.Ext(EXT_NDARRAY, payload)))
        return (REF, self._put(KIND_TYPED, encode_typed(EXT_NDARRAY, payload, None)))

    def _list_of(self, entries: list[Entry]) -> Entry:
        """The entry of a list made of ``entries`` (inline when small, else a node or runs)."""
        if all(e[0] == INLINE for e in entries):
            mp = array_header(len(entries)) + b"".join(e[1] for e in entries)
            if len(mp) <= INLINE_MAX:
                return (INLINE, mp)
        return self._list_from_runs([], [], entries, 0, [], False)[0]

    def _convert(self, value: Any, path: Path, depth: int) -> Entry:
        where = format_path(path)
        if self.default is None:
            raise UnsupportedValueError(
                f"{type(value).__name__} is not supported (use dict, list, str, bytes, int, float, bool, None, "
                "datetime, date, time, timedelta, UUID, Decimal, tuple, set, frozenset, a type registered with "
                "castate.register, or pass default= to convert it)",
                where,
            )
        _touch()  # what default= returns for a mutable object may change with it
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

    def _keys(self, d: dict[Any, Any], path: Path) -> list[str]:
        """The keys of ``d`` in insertion order, each checked to be a str that is valid UTF-8."""
        keys = list(d)
        if len(keys) > 16 and set(map(type, keys)) == _STR_TYPE and all(map(str.isascii, keys)):
            return keys  # big dicts: every key checked at C speed (all str, all ASCII)
        for k in keys:
            if type(k) is not str:
                raise UnsupportedValueError(f"dict key {k!r} is not a str", format_path(path))
            if not k.isascii():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    raise UnsupportedValueError(
                        f"dict key {k!r} has a lone surrogate (not valid UTF-8)", format_path(path)
                    ) from None
        return keys

    # -- strings and bytes ----------------------------------------------------------------

    def _blob(self, kind: int, data: bytes) -> bytes:
        if len(data) <= CHUNK_MIN:
            return self._put(kind, data)
        view = memoryview(data)
        chunks = [(self._put(KIND_CHUNK, bytes(view[o : o + n])), n) for o, n in chunking.chunk_spans(view)]
        return self._put(KIND_CHUNKED, encode_chunked(kind, len(data), chunks))

    # -- dicts ------------------------------------------------------------------------------

    def _dict_entry(
        self,
        entries: list[tuple[str, Entry]],
        force_node: bool,
        keep: tuple[dict[str, Any], list[str], dict[str, Any]] | None = None,
    ) -> tuple[Entry, list[DictRun] | None, list[Level]]:
        """Inline MessagePack for a small plain dict, else a dict node (cut into runs when big).

        With ``keep`` (the dict, its keys and its children's shadows), a dict cut into
        runs also returns its runs and index levels, for the shadow.
        """
        plain = all(e[0] == INLINE for _, e in entries)
        if plain and not force_node:
            mp = map_header(len(entries)) + b"".join(_pack(k) + e[1] for k, e in entries)
            if len(mp) <= INLINE_MAX:
                return (INLINE, mp), None, []
        weights = [len(_pack(k)) + _weight(e) for k, e in entries]
        if sum(weights) <= chunking.RUN_MAX:
            return (REF, self._dict_node(entries)), None, []
        if keep is not None:
            d, keys, children = keep
            cut = self._dict_cutter(d, keys, self.objects)
            cut.feed([(k, e, children.get(k)) for k, e in entries])
            runs, _ = cut.finish()
            root, levels = self._index(INDEX_DICT, [(r.node, r.count) for r in runs])
            return (REF, root), runs, levels
        hashes = [_hash32(e, k) for k, e in entries]
        ends, _ = chunking.cut(hashes, weights)
        if not ends or ends[-1] != len(entries):
            ends.append(len(entries))
        pairs, start = [], 0
        for end in ends:
            pairs.append((self._dict_node(entries[start:end]), end - start))
            start = end
        return (REF, self._index(INDEX_DICT, pairs)[0]), None, []

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
        self.encoded += len(lst)
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
        if _maybe_inline(lst):
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
        return self._list_realign(lst, shadow, k, path, depth)

    def _list_realign(
        self, lst: list[Any], shadow: ListShadow, k0: int, path: Path, depth: int
    ) -> tuple[Entry, ListShadow]:
        """The list against the runs of its last save, of which the first ``k0`` are unchanged.

        Each later run is looked for at its old offset moved by a candidate shift (new minus
        old position): the shifts the hints propose for the front and the back, the change of
        length (edits, inserts and deletes with nothing appended) and none. A run is taken
        where its digest matches, trying first the shift that matched the run before it.
        """
        runs = shadow.runs
        m = len(runs)
        starts = _starts(runs)
        old_n = starts[-1] + runs[-1].count
        n = len(lst)
        tracked = type(lst) is TrackedList
        front, back, items = self._hints(lst, shadow, old_n)
        segs: list[_Seg] = [(starts[r], runs[r].count, runs[r], _known(shadow, r)) for r in range(k0)]
        lo = starts[k0] if k0 else 0  # where the next run may start in the new list
        first = k0
        if k0 == 0 and front is not None and 0 < -front < old_n and items is not None:
            # A front trim of k inside run j: the remnant keeps the run's entries when the
            # trimmed elements followed by the remnant digest as the whole run did (msgpack
            # arrays parse one way, so each remnant element then packs as the old one did).
            k = -front
            j = bisect.bisect_right(starts, k) - 1
            known = _known(shadow, j)
            end = starts[j] + runs[j].count - k
            if (
                starts[j] < k <= len(items)
                and known is not None
                and end <= n
                and runs[j].digest is not None
                and run_digest(items[starts[j] : k] + lst[:end], tracked) == runs[j].digest
            ):
                segs.append((0, end, None, known[k - starts[j] :]))
                lo, first = end, j + 1
        shifts = [s for s in dict.fromkeys((front, back, n - old_n, 0)) if s is not None]
        last = shifts[0]
        for r in range(first, m):
            run = runs[r]
            c = run.count
            if run.digest is None:
                continue
            for s in (last, *(x for x in shifts if x != last)):
                t = starts[r] + s
                if t < lo or t + c > n or (r == k0 and s == 0):  # (the prefix tried run k0 in place)
                    continue
                if _digest(lst, t, t + c) == run.digest:
                    segs.append((t, c, run, _known(shadow, r)))
                    lo, last = t + c, s
                    break
        return self._rebuild(lst, shadow, segs, path, depth)

    def _hints(self, lst: list[Any], shadow: ListShadow, old_n: int) -> tuple[int | None, int | None, list[Any] | None]:
        """Proposed shifts (new minus old position) of the old front and back, and the old elements.

        A tracked list has them from its counters; a plain list finds them in the shallow copy
        of the last save (by identity, else by equality), and a tracked list replaced by a new
        list in the old list if that is unchanged. Either way they are hints: only digests
        decide.
        """
        items = shadow.items
        source = shadow.source
        n = len(lst)
        if source is lst:  # a tracked list: its counters say how many left the front and came
            k = lst._front - shadow.front
            added = lst._appended - shadow.appended
            return -k, n - added - old_n, items
        if source is not None and source._version == shadow.version:
            items = source  # a tracked list replaced by another: the old one still holds the saved elements
        if items is not None and len(items) == old_n and items and lst:
            i = _find(items, lst[0])  # lst[0] was old element i: i elements left the front
            if i >= 0:
                front: int | None = -i
            else:
                i = _find(lst, items[0])  # the old first element moved to i: i came in at the front
                front = i if i >= 0 else None
            u = _find(lst, items[-1], from_end=True)  # the old last element is at u: what follows it came
            if u >= 0:
                back: int | None = u - (old_n - 1)
            else:
                u = _find(items, lst[-1], from_end=True)  # the new last element was old element u
                back = (n - 1) - u if u >= 0 else None
            return front, back, items
        return None, None, items

    def _rebuild(
        self, lst: list[Any], shadow: ListShadow, segs: list[_Seg], path: Path, depth: int
    ) -> tuple[Entry, ListShadow]:
        """The list's runs, replaying the cutter from its start over confirmed segments.

        ``segs`` are (new position, count, old run or None, its entries or None), in order,
        each confirmed to hold the old elements. A closed old run reached at a cut is kept
        whole; otherwise its entries (known, or encoded now) go through the cutter. Gaps
        between segments are encoded element by element.
        """
        n = len(lst)

        def make(start: int, end: int, entries: list[Entry], closed: bool, _weight: int) -> Run:
            return Run(end - start, _digest(lst, start, end), self._list_node(entries), closed)

        cut: _Recut[Entry, Run] = _Recut(_list_hw, make)
        reopen: tuple[int, Run] | None = None  # an open old run fed from a cut
        for t, c, run, known in segs:
            if cut.pos < t:
                cut.feed(self._encode_slice(lst, cut.pos, t, path, depth))
            if run is not None and not cut.pend:
                if run.closed:
                    cut.keep(run, c, known)
                    continue
                reopen = (t, run)
            cut.feed(known if known is not None else self._encode_slice(lst, t, t + c, path, depth))
        if cut.pos < n:
            cut.feed(self._encode_slice(lst, cut.pos, n, path, depth))
        # An open old run fed from a cut with nothing after it is its old node again.
        reuse = reopen[1] if reopen and cut.start == reopen[0] and len(cut.pend) == reopen[1].count else None
        out, tail = cut.finish(reuse)
        same = _same_prefix([(r.node, r.count) for r in out], [(r.node, r.count) for r in shadow.runs])
        return self._assemble(out, tail, shadow.levels, same, cut.head)

    def _list_trimmed(
        self, lst: list[Any], shadow: ListShadow, k: int, path: Path, depth: int
    ) -> tuple[Entry, ListShadow | None]:
        """A tracked list whose stamps say: the saved list without its first ``k`` elements,
        then what was appended. Old runs need no digest; the remnant of the run the trim cut
        into reuses its entries when the shadow has them."""
        runs = shadow.runs
        if k >= shadow.length or _maybe_inline(lst):
            return self._list_fresh(lst, path, depth, keep_shadow=True)
        starts = _starts(runs)
        j = bisect.bisect_right(starts, k) - 1
        segs: list[_Seg] = []
        if starts[j] < k:
            known = _known(shadow, j)
            segs.append((0, starts[j] + runs[j].count - k, None, known[k - starts[j] :] if known is not None else None))
            j += 1
        segs += [(starts[r] - k, runs[r].count, runs[r], _known(shadow, r)) for r in range(j, len(runs))]
        return self._rebuild(lst, shadow, segs, path, depth)

    def _list_appended(
        self, lst: list[Any], shadow: ListShadow, p: int, path: Path, depth: int
    ) -> tuple[Entry, ListShadow | None]:
        """Elements from ``p`` on were appended: continue the open tail run, or start after a closed one."""
        runs = shadow.runs
        new = self._encode_slice(lst, p, len(lst), path, depth)
        if runs[-1].closed:
            return self._list_from_runs(lst, runs, new, p, shadow.levels, True, shadow.head)
        last = runs[-1]
        return self._list_from_runs(lst, runs[:-1], shadow.tail + new, p - last.count, shadow.levels, True, shadow.head)

    def _encode_slice(self, lst: list[Any], a: int, b: int, path: Path, depth: int) -> list[Entry]:
        self.encoded += b - a
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
        head: list[Entry] | None = None,
    ) -> tuple[Entry, ListShadow | None]:
        """Cut ``entries`` (elements from ``start``) into runs that follow the ``kept`` runs
        (``head``: the entries of the first kept run, if known)."""
        ends, rest = chunking.cut([_hash32(e) for e in entries], [_weight(e) for e in entries])
        new = self._make_runs(lst, start, entries, ends, keep_shadow)
        runs = kept + new
        tail = entries[ends[-1] if ends else 0 :] if rest else []
        if not kept and keep_shadow:
            head = entries[: new[0].count]
        entry, shadow = self._assemble(runs, tail, old_levels, len(kept), head)
        return entry, (shadow if keep_shadow else None)

    def _assemble(
        self, runs: list[Run], tail: list[Entry], old_levels: list[Level], same: int, head: list[Entry] | None
    ) -> tuple[Entry, ListShadow]:
        """The list's root over its runs; ``same`` leading runs are those of ``old_levels``'s list."""
        levels: list[Level] = []
        if len(runs) == 1:
            root = runs[0].node
        else:
            root, levels = self._index(INDEX_LIST, [(r.node, r.count) for r in runs], old_levels, same)
        entry = (REF, root)
        return entry, ListShadow(entry, runs, tail, levels, head)

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
            old_ends, old_groups = old_levels[depth] if old_levels and depth < len(old_levels) else ([], [])
            keep = bisect.bisect_right(old_ends, same) if same else 0
            start = old_ends[keep - 1] if keep else 0
            ends = old_ends[:keep]
            groups = old_groups[:keep]
            rest = level[start:]
            cuts, _ = chunking.cut([int.from_bytes(cid[:4], "little") for cid, _ in rest], [REF_WEIGHT] * len(rest))
            ends = ends + [start + c for c in cuts]
            bounds = [start + c for c in cuts]
            if not bounds or bounds[-1] != len(level):
                bounds.append(len(level))
            s = start
            for e in bounds:
                if e == s:  # every old group kept, the last one closed by a cut at the level's end
                    continue
                group = level[s:e]
                content = encode_index(flavor, group)
                oid = self._object_id(KIND_INDEX, content)
                self.objects.setdefault(oid, (KIND_INDEX, content))
                groups.append((oid, sum(c for _, c in group)))
                s = e
            levels.append((ends, groups))
            if len(groups) == 1:
                return groups[0][0], levels
            level, same, depth = groups, keep, depth + 1


# A stretch of a list confirmed to hold old elements: (new position, count, old run or None
# for a remnant, the entries if known).
_Seg = tuple[int, int, Run | None, list[Entry] | None]
_STR_TYPE = {str}


def _hash32(entry: Entry, key: str | None = None) -> int:
    tag, payload = entry
    if tag == REF and key is None:
        return int.from_bytes(payload[:4], "little")
    h = blake3.blake3(bytes((tag,)))
    if key is not None:
        h.update(key.encode("utf-8"))
    h.update(payload)
    return int.from_bytes(h.digest(4), "little")


def _list_hw(entries: list[Entry]) -> tuple[list[int], list[int]]:
    return [_hash32(e) for e in entries], [_weight(e) for e in entries]


def _dict_hw(items: list[tuple[str, Entry, Any]]) -> tuple[list[int], list[int]]:
    return [_hash32(e, k) for k, e, _ in items], [len(_pack(k)) + _weight(e) for k, e, _ in items]


def _packed(value: Any) -> bytes | None:
    try:
        return _pack(value, default=_untrack, option=_STRICT)
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return None


def typed_key(value: Any) -> bytes | None:
    """Bytes that tell a value from every other (typed values by type and exact body), for
    comparing values outside plain JSON; None for a value outside the domain."""
    return _packed(value)


def _packed_shadow(value: Any, entry: Entry) -> PackedShadow | None:
    packed = _packed(value)
    return None if packed is None else PackedShadow(packed, entry)


def _digest(lst: list[Any], a: int, b: int) -> bytes | None:
    return run_digest(lst[a:b], type(lst) is TrackedList)


def _dict_digest(keys: list[str], get: Callable[[str], Any], a: int, b: int, tracked: bool) -> bytes | None:
    """Digest of the run of keys ``keys[a:b]``: their MessagePack and their values', in one C call."""
    ks = keys[a:b]
    return run_digest([ks, list(map(get, ks))], tracked)


def _starts(runs: Sequence[Run]) -> list[int]:
    """The old position of each run's first element."""
    return [0, *itertools.accumulate(r.count for r in runs[:-1])]


def _known(shadow: ListShadow, r: int) -> list[Entry] | None:
    """The entries of old run ``r`` if the shadow has them (the first run's, the open last run's)."""
    if r == 0 and shadow.head is not None:
        return shadow.head
    if r == len(shadow.runs) - 1 and not shadow.runs[r].closed:
        return shadow.tail
    return None


def _same_prefix(a: list[tuple[bytes, int]], b: list[tuple[bytes, int]]) -> int:
    """How many leading (node, count) pairs two run lists share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _find(seq: list[Any], obj: Any, from_end: bool = False) -> int:
    """A position of ``obj`` in ``seq``, the first (or with ``from_end`` the last), or -1.

    Looked for as the object itself, then as an equal value (a list rebuilt from the same
    data each step holds new, equal objects); both are only hints. C-speed scans of windows
    that grow from the front (or the end), so finding an element k places in costs O(k).
    ``seq`` keeps its elements alive and ``obj`` is alive, so equal ids mean identity.
    """
    n = len(seq)
    for by_id in (True, False):
        key = id(obj) if by_id else obj
        done, size = 0, 32
        while done < n:
            lo, hi = (max(0, n - done - size), n - done) if from_end else (done, min(n, done + size))
            window = list(map(id, seq[lo:hi])) if by_id else seq[lo:hi]
            if from_end:
                window.reverse()
            try:
                j = window.index(key)
            except ValueError:
                done, size = done + (hi - lo), size * 4
                continue
            except Exception:  # an out-of-domain value whose == raises: no hint
                return -1
            return hi - 1 - j if from_end else lo + j
    return -1


def _maybe_inline(lst: list[Any]) -> bool:
    """Whether a list's encoding may be short enough to sit inline (then it is encoded fresh,
    which decides): at most INLINE_MAX elements, and either MessagePack of at most INLINE_MAX
    bytes or a value outside the domain, which ``default=`` may turn into a small one.

    One C-speed pack of the whole list. (Packing only a few elements first packs fewer bytes
    but measured slower on the append path: the later run digests then ran slower.)
    """
    if len(lst) > INLINE_MAX:
        return False
    option = _STRICT_TRACKED if type(lst) is TrackedList else _STRICT
    try:
        return len(_pack(lst, default=_typed_default, option=option)) <= INLINE_MAX
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return True


def _weight(entry: Entry) -> int:
    return len(entry[1]) + 1 if entry[0] == INLINE else REF_WEIGHT
