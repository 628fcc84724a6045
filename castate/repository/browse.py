"""One level of a stored state at a time, for viewers: a page of a dict's or list's
children, each summed up (kind, size, a short preview) without reading what lies below.

Opening the root of a 50 MB state reads the commit's root node (with the runs of a very
large root dict), then one object per child shown; a chunked string shows its first chunk
only. A page of a long list reads just the index nodes and runs that hold that page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from castate.codec.nodes import INDEX_DICT, parse_chunked, parse_index, parse_node, parse_typed
from castate.codec.objects import KIND_BYTES, KIND_CHUNKED, KIND_DICT, KIND_INDEX, KIND_LIST, KIND_STR, KIND_TYPED
from castate.codec.types import CODE_NAMES, readable
from castate.errors import CorruptObjectError, InvalidKeyError
from castate.repository.tree import Entry, Loader, Ref, dict_of, entry_at, list_entries

PREVIEW = 300  # characters of a str (or bytes of a bytes value) shown before folding
PAGE = 200  # children per page


@dataclass(frozen=True, slots=True)
class Item:
    """A value summed up: ``kind`` is dict, list, str, bytes, int, float, bool or null, or a
    typed value's type (datetime, UUID, tuple, a registered name, ...);
    ``size`` counts keys, items, or UTF-8 bytes of a str or bytes (None for the rest);
    ``value`` is the value itself for numbers, bools and null, the first ``preview``
    characters (or bytes) of a str or bytes value, and None for a dict or list;
    ``complete`` says whether ``value`` is the whole value."""

    key: str | int | None
    kind: str
    size: int | None
    value: Any
    complete: bool


@dataclass(frozen=True, slots=True)
class Level:
    """A page of a dict's (keys in code-point order) or a list's children."""

    kind: str
    total: int
    offset: int
    items: list[Item]


async def list_range(loader: Loader, oid: bytes, start: int, stop: int) -> list[Entry]:
    """Items ``start`` to ``stop`` of a stored list, reading only the runs (and index nodes) that hold them."""
    stop = max(start, stop)
    frontier = [(oid, 0)]  # objects to open, each with the list position of its first item
    runs: list[tuple[int, list[Entry]]] = []
    while frontier:
        got = await loader.get_many(o for o, _ in frontier)
        nxt = []
        for sid, pos in frontier:
            kind, content = got[sid]
            if kind == KIND_INDEX:
                for cid, count in parse_index(sid, content)[1]:
                    if pos < stop and pos + count > start:
                        nxt.append((cid, pos))
                    pos += count
            elif kind == KIND_LIST:
                runs.append((pos, list_entries(sid, kind, content)))
            else:
                raise CorruptObjectError(sid.hex(), "a list index points at something that is not a list")
        frontier = nxt
    out: list[Entry] = []
    for pos, items in sorted(runs, key=lambda r: r[0]):
        lo, hi = max(start - pos, 0), min(stop - pos, len(items))
        out.extend(items[lo:hi])
    return out


async def level(
    loader: Loader,
    root: bytes,
    parts: Sequence[str],
    *,
    offset: int = 0,
    limit: int = PAGE,
    preview: int = PREVIEW,
) -> Level | Item:
    """The children (``offset`` to ``offset + limit``) of the dict or list at the JSON
    pointer ``parts`` below ``root``, or the value there summed up when it is neither.
    NotFoundError when the path does not exist."""
    if offset < 0 or limit < 0:
        raise InvalidKeyError("offset and limit must not be negative")
    entry = await entry_at(loader, root, parts)
    (item,) = await describe(loader, [(None, entry)], preview)
    if item.kind == "dict":
        children = entry if type(entry) is dict else await dict_of(loader, entry.id)
        keys = list(children)[offset : offset + limit]
        items = await describe(loader, [(k, children[k]) for k in keys], preview)
        return Level("dict", len(children), offset, items)
    if item.kind == "list":
        assert item.size is not None
        if type(entry) is list:
            chosen = entry[offset : offset + limit]
        else:
            chosen = await list_range(loader, entry.id, offset, offset + limit)
        items = await describe(loader, [(offset + i, e) for i, e in enumerate(chosen)], preview)
        return Level("list", item.size, offset, items)
    return item


async def describe(loader: Loader, entries: Sequence[tuple[str | int | None, Entry]], preview: int) -> list[Item]:
    """Each entry summed up, reading one object per stored entry (and the first chunk of a chunked value)."""
    got = await loader.get_many(e.id for _, e in entries if type(e) is Ref)
    first_chunks: dict[bytes, bytes] = {}
    for oid, (kind, content) in got.items():
        if kind == KIND_CHUNKED:
            chunks = parse_chunked(oid, content)[2]
            if chunks:
                first_chunks[oid] = chunks[0][0]
    chunk_data = await loader.get_many(first_chunks.values()) if first_chunks else {}
    out = []
    for key, e in entries:
        if type(e) is Ref:
            kind, content = got[e.id]
            first = chunk_data[first_chunks[e.id]][1] if e.id in first_chunks else b""
            out.append(_stored(key, e.id, kind, content, bytes(first), preview))
        else:
            out.append(_inline(key, e, preview))
    return out


def _stored(key: str | int | None, oid: bytes, kind: int, content: Any, first: bytes, preview: int) -> Item:
    if kind == KIND_DICT:
        body, _ = parse_node(oid, kind, content)
        return Item(key, "dict", len(body), None, False)
    if kind == KIND_LIST:
        body, _ = parse_node(oid, kind, content)
        return Item(key, "list", len(body), None, False)
    if kind == KIND_INDEX:
        flavor, children = parse_index(oid, content)
        return Item(key, "dict" if flavor == INDEX_DICT else "list", sum(n for _, n in children), None, False)
    if kind == KIND_STR:
        text = bytes(content).decode("utf-8")
        return Item(key, "str", len(content), text[:preview], len(text) <= preview)
    if kind == KIND_BYTES:
        return Item(key, "bytes", len(content), bytes(content[:preview]), len(content) <= preview)
    if kind == KIND_CHUNKED:
        target, total, _ = parse_chunked(oid, content)
        if target == KIND_STR:
            head = first[: preview * 4].decode("utf-8", errors="ignore")[:preview]
            return Item(key, "str", total, head, False)
        return Item(key, "bytes", total, first[:preview], False)
    if kind == KIND_TYPED:
        code, _, name = parse_typed(oid, content)
        return Item(key, name or CODE_NAMES[code], None, f"({CODE_NAMES[code]}, stored as an object of its own)", True)
    raise CorruptObjectError(oid.hex(), "not a value object")


def _inline(key: str | int | None, value: Any, preview: int) -> Item:
    t = type(value)
    if t is dict:
        return Item(key, "dict", len(value), None, False)
    if t is list:
        return Item(key, "list", len(value), None, False)
    if t is str:
        return Item(key, "str", len(value.encode("utf-8")), value[:preview], len(value) <= preview)
    if t is bytes:
        return Item(key, "bytes", len(value), value[:preview], len(value) <= preview)
    if value is None:
        return Item(key, "null", None, None, True)
    shown = readable(value)
    if shown is not None:  # a typed scalar, or a float NaN or infinity (not JSON)
        return Item(key, shown[0], None, shown[1], True)
    if t in (bool, int, float):
        return Item(key, {bool: "bool", int: "int", float: "float"}[t], None, value, True)
    text = repr(value)  # an inline tuple, set, frozenset or user type
    return Item(
        key, t.__name__, len(value) if hasattr(value, "__len__") else None, text[:preview], len(text) <= preview
    )


__all__ = ["PAGE", "PREVIEW", "Item", "Level", "describe", "level", "list_range"]
