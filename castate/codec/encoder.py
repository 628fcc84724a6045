"""Turn a state tree into content-addressed objects, reusing the previous save where it can.

An ``Encoder`` walks one state once. Small values stay inline in their parent node as
canonical JSON; dicts and lists that grow past ``INLINE_MAX`` become nodes of their own;
long lists and big dicts are cut into content-defined runs under index nodes; large
strings and bytes become blobs, very large ones content-defined chunks.

The walk is exact for new content and checks every value against the value domain.
Content that the previous save of the same session already encoded is recognised
without per-element Python work: each run of a long list keeps a blake3 digest of its
elements' JSON (one C-speed ``orjson.dumps`` per run; a run of bytes values hashes their
bytes), and a run whose digest is unchanged keeps its node. The caller keeps the
returned ``Shadow`` for the next save.
"""

from __future__ import annotations

import array
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3
import orjson

from castate.codec import chunking
from castate.codec.nodes import (
    INDEX_DICT,
    INDEX_LIST,
    TAG_BYTES,
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

# An entry is how a value sits inside its parent node: (tag, payload).
INLINE = 0  # payload: canonical JSON of the value (no bytes and no refs inside)
REF = 1  # payload: the 32-byte id of the object holding the value
RAW = 2  # payload: a short bytes value, kept in the node's specials table
Entry = tuple[int, bytes]

INLINE_MAX = 256  # a dict or list whose JSON is longer becomes a node of its own
BLOB_MIN = 2048  # a str whose JSON (or bytes whose length) is longer is stored on its own
CHUNK_MIN = 65536  # a str/bytes value longer than this is content-defined chunked
MAX_DEPTH = 200  # containers nested deeper than this are refused
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
REF_WEIGHT = 40

_NULL, _TRUE, _FALSE = b"null", b"true", b"false"
_DIGEST_OPTS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

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


def _digest_refuse(_value: Any) -> Any:
    raise TypeError("not a plain JSON value")


def run_digest(items: list[Any]) -> bytes | None:
    """blake3 of the elements' plain JSON, or of their bytes when all are bytes; else None."""
    if items and type(items[0]) is bytes:
        return _bytes_digest(items)
    try:
        return blake3.blake3(orjson.dumps(items, default=_digest_refuse, option=_DIGEST_OPTS)).digest()
    except (TypeError, orjson.JSONEncodeError):
        return None


def _bytes_digest(items: list[Any]) -> bytes | None:
    """Digest of a run of exact ``bytes`` values (such as serialized messages), None for any other run.

    It hashes a 0x00 byte, the count, every length (u64) and then the values back to back:
    JSON never starts with 0x00, so this digest never equals the JSON digest of a run.
    """
    if set(map(type, items)) != {bytes}:
        return None
    lengths = array.array("Q", map(len, items))
    if sys.byteorder != "little":
        lengths.byteswap()
    h = blake3.blake3(b"\x00" + len(items).to_bytes(8, "little"))
    h.update(lengths.tobytes())
    h.update(b"".join(items))
    return h.digest()


# -- shadows: what the previous save remembers about the containers it encoded --------


@dataclass(slots=True)
class Run:
    count: int
    digest: bytes | None
    node: bytes
    closed: bool


@dataclass(slots=True)
class ListShadow:
    entry: Entry
    runs: list[Run]
    tail: list[Entry]  # entries of the last run when it is open (ended by the list's end)
    index_ids: frozenset[bytes]


@dataclass(slots=True)
class DictShadow:
    entry: Entry
    children: dict[str, Any]  # key -> shadow of that value, for values that have one


@dataclass(slots=True)
class LeafShadow:
    value: str | bytes  # identity of an immutable large value confirms it is unchanged
    entry: Entry


Shadow = ListShadow | DictShadow | LeafShadow


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
        if type(state) is not dict:
            raise UnsupportedValueError(f"a state must be a dict, not {type(state).__name__}", "state")
        entry, new_shadow = self.encode_tracked(state, shadow, None, 0, force_node=True)
        return entry[1], new_shadow

    # -- values reached through dict keys from the root: keep shadows -------------------

    def encode_tracked(
        self, value: Any, shadow: Shadow | None, path: Path, depth: int, force_node: bool = False
    ) -> tuple[Entry, Shadow | None]:
        t = type(value)
        if t is dict:
            return self._dict_tracked(value, shadow if type(shadow) is DictShadow else None, path, depth, force_node)
        if t is list:
            return self._list_tracked(value, shadow if type(shadow) is ListShadow else None, path, depth)
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
        return entry, (DictShadow(entry, children) if entry[0] == REF else None)

    def _list_tracked(
        self, lst: list[Any], shadow: ListShadow | None, path: Path, depth: int
    ) -> tuple[Entry, Shadow | None]:
        if depth >= MAX_DEPTH:
            raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
        self._enter(lst, path)
        try:
            if shadow is None:
                return self._list_fresh(lst, path, depth, keep_shadow=True)
            return self._list_incremental(lst, shadow, path, depth)
        finally:
            self._active.discard(id(lst))

    # -- plain values: no shadows below this point ------------------------------------

    def encode(self, value: Any, path: Path, depth: int) -> Entry:
        """The entry of any value; validates it against the value domain."""
        t = type(value)
        if t is str:
            if len(value) <= BLOB_MIN:
                try:
                    js = orjson.dumps(value)
                except orjson.JSONEncodeError:
                    raise UnsupportedValueError(
                        "str with a lone surrogate (not valid UTF-8)", format_path(path)
                    ) from None
                if len(js) <= BLOB_MIN:
                    return (INLINE, js)
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                raise UnsupportedValueError("str with a lone surrogate (not valid UTF-8)", format_path(path)) from None
            return (REF, self._blob(KIND_STR, data))
        if t is int:
            if value < INT_MIN or value > INT_MAX:
                raise UnsupportedValueError("int outside the 64-bit range [-2**63, 2**64-1]", format_path(path))
            return (INLINE, str(value).encode())
        if t is float:
            if not math.isfinite(value):
                raise UnsupportedValueError(f"non-finite float {value!r}", format_path(path))
            return (INLINE, orjson.dumps(value))
        if value is None:
            return (INLINE, _NULL)
        if t is bool:
            return (INLINE, _TRUE if value else _FALSE)
        if t is dict or t is list:
            if depth >= MAX_DEPTH:
                raise UnsupportedValueError(f"state nested deeper than {MAX_DEPTH} levels", format_path(path))
            hit = self._memo.get(id(value))
            if hit is not None and hit[0] is value:
                return hit[1]
            self._enter(value, path)
            if t is dict:
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
                return (RAW, value)
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
            js = b"{" + b",".join(orjson.dumps(k) + b":" + e[1] for k, e in entries) + b"}"
            if len(js) <= INLINE_MAX:
                return (INLINE, js)
        weights = [len(orjson.dumps(k)) + 1 + _weight(e) for k, e in entries]
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
        return (REF, self._index(INDEX_DICT, runs, frozenset()))

    def _dict_node(self, entries: list[tuple[str, Entry]]) -> bytes:
        specials: list[Special] = []
        parts = []
        for i, (k, (tag, payload)) in enumerate(entries):
            if tag == INLINE:
                parts.append(orjson.dumps(k) + b":" + payload)
            else:
                parts.append(orjson.dumps(k) + b":null")
                specials.append((i, TAG_REF if tag == REF else TAG_BYTES, payload))
        return self._put(KIND_DICT, encode_node(specials, b"{" + b",".join(parts) + b"}"))

    # -- lists ------------------------------------------------------------------------------

    def _list_fresh(self, lst: list[Any], path: Path, depth: int, keep_shadow: bool) -> tuple[Entry, ListShadow | None]:
        entries = [self.encode(x, (path, i), depth + 1) for i, x in enumerate(lst)]
        if all(e[0] == INLINE for e in entries):
            js = b"[" + b",".join(e[1] for e in entries) + b"]"
            if len(js) <= INLINE_MAX:
                return (INLINE, js), None
        entry, shadow = self._list_from_runs(lst, [], entries, 0, frozenset(), keep_shadow)
        return entry, shadow

    def _list_incremental(
        self, lst: list[Any], shadow: ListShadow, path: Path, depth: int
    ) -> tuple[Entry, Shadow | None]:
        n = len(lst)
        if n <= INLINE_MAX // 2 and _plain_json_len(lst) <= INLINE_MAX:
            return self._list_fresh(lst, path, depth, keep_shadow=True)
        runs = shadow.runs
        # Prefix: old runs whose elements are unchanged at the same offsets.
        p = k = 0
        while k < len(runs):
            c = runs[k].count
            if p + c > n or runs[k].digest is None or run_digest(lst[p : p + c]) != runs[k].digest:
                break
            p += c
            k += 1
        if k == len(runs):
            if p == n:
                return shadow.entry, shadow
            # Appended: continue the open tail run, or start after a closed one.
            new = self._encode_slice(lst, p, n, path, depth)
            if runs[-1].closed:
                return self._list_from_runs(lst, runs, new, p, shadow.index_ids, True)
            last = runs[-1]
            return self._list_from_runs(lst, runs[:-1], shadow.tail + new, p - last.count, shadow.index_ids, True)
        # Suffix: old runs whose elements are unchanged at the same distance from the end.
        q, j = n, len(runs)
        while j > k:
            c = runs[j - 1].count
            if q - c < p or runs[j - 1].digest is None or run_digest(lst[q - c : q]) != runs[j - 1].digest:
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
        return self._assemble(out, tail, shadow.index_ids)

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
            digest = run_digest(lst[start + s : start + e]) if keep_shadow else None
            runs.append(Run(e - s, digest, self._list_node(entries[s:e]), closed=e in ends))
            s = e
        return runs

    def _list_from_runs(
        self,
        lst: list[Any],
        kept: list[Run],
        entries: list[Entry],
        start: int,
        old_index: frozenset[bytes],
        keep_shadow: bool,
    ) -> tuple[Entry, ListShadow | None]:
        """Cut ``entries`` (elements from ``start``) into runs that follow the ``kept`` runs."""
        ends, rest = chunking.cut([_hash32(e) for e in entries], [_weight(e) for e in entries])
        runs = kept + self._make_runs(lst, start, entries, ends, keep_shadow)
        tail = entries[ends[-1] if ends else 0 :] if rest else []
        entry, shadow = self._assemble(runs, tail, old_index)
        return entry, (shadow if keep_shadow else None)

    def _assemble(self, runs: list[Run], tail: list[Entry], old_index: frozenset[bytes]) -> tuple[Entry, ListShadow]:
        if len(runs) == 1:
            root, index_ids = runs[0].node, frozenset[bytes]()
        else:
            made: set[bytes] = set()
            root = self._index(INDEX_LIST, [(r.node, r.count) for r in runs], old_index, made)
            index_ids = frozenset(made)
        entry = (REF, root)
        return entry, ListShadow(entry, runs, tail, index_ids)

    def _list_node(self, entries: list[Entry]) -> bytes:
        specials: list[Special] = []
        parts = []
        for i, (tag, payload) in enumerate(entries):
            if tag == INLINE:
                parts.append(payload)
            else:
                parts.append(_NULL)
                specials.append((i, TAG_REF if tag == REF else TAG_BYTES, payload))
        return self._put(KIND_LIST, encode_node(specials, b"[" + b",".join(parts) + b"]"))

    # -- index nodes --------------------------------------------------------------------------

    def _index(
        self,
        flavor: int,
        children: list[tuple[bytes, int]],
        known: frozenset[bytes],
        made: set[bytes] | None = None,
    ) -> bytes:
        """Build index levels over (child id, count) pairs until one root remains."""
        level = children
        while True:
            hashes = [int.from_bytes(cid[:4], "little") for cid, _ in level]
            ends, _ = chunking.cut(hashes, [REF_WEIGHT] * len(level))
            if not ends or ends[-1] != len(level):
                ends.append(len(level))
            nxt: list[tuple[bytes, int]] = []
            s = 0
            for e in ends:
                group = level[s:e]
                content = encode_index(flavor, group)
                oid = object_id(KIND_INDEX, content)
                if oid not in known:
                    self.objects.setdefault(oid, (KIND_INDEX, content))
                if made is not None:
                    made.add(oid)
                nxt.append((oid, sum(c for _, c in group)))
                s = e
            if len(nxt) == 1:
                return nxt[0][0]
            level = nxt


def _hash32(entry: Entry, key: str | None = None) -> int:
    tag, payload = entry
    if tag == REF and key is None:
        return int.from_bytes(payload[:4], "little")
    h = blake3.blake3(bytes((tag,)))
    if key is not None:
        h.update(key.encode("utf-8"))
    h.update(payload)
    return int.from_bytes(h.digest(4), "little")


def _plain_json_len(lst: list[Any]) -> int:
    """Length of a list's JSON when it holds only plain JSON values, else a huge number."""
    try:
        return len(orjson.dumps(lst, default=_digest_refuse, option=_DIGEST_OPTS))
    except (TypeError, orjson.JSONEncodeError):
        return 1 << 62


def _weight(entry: Entry) -> int:
    tag, payload = entry
    if tag == INLINE:
        return len(payload) + 1
    if tag == REF:
        return REF_WEIGHT
    return len(payload) + 10
