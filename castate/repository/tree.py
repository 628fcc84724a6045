"""Reading parts of a stored tree without loading all of it: for diff and for ``show --path``.

A ``Loader`` fetches objects on demand and coalesces the requests that concurrent tasks
make in one turn of the event loop into one ``get_objects`` call, so code written as a
plain recursion still reads one batch per tree level. Node contents become *entries*:
an inline value (plain Python), a short bytes value, or a ``Ref`` to another object.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from castate.backends.base import Backend
from castate.codec import Decoder
from castate.codec.decoder import Content
from castate.codec.encoder import typed_key
from castate.codec.nodes import INDEX_DICT, TAG_REF, check_nesting, parse_index, parse_node
from castate.codec.objects import KIND_DICT, KIND_INDEX, KIND_LIST
from castate.codec.types import unregistered_as_dicts
from castate.errors import CorruptObjectError, InvalidKeyError, MissingObjectError, NotFoundError
from castate.repository.snapshot import fetch_levels


@dataclass(frozen=True, slots=True)
class Ref:
    """An entry that points at the object holding the value."""

    id: bytes


#: An entry: ``Ref``, ``bytes`` (a short bytes value) or an inline JSON value.
Entry = Any


class Loader:
    """Fetches and verifies objects, caching them, batching concurrent requests.

    ``read`` counts the objects fetched from the backend (each id once).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cache: dict[bytes, tuple[int, Content]] = {}
        self.read = 0
        self._pending: dict[bytes, list[asyncio.Future[tuple[int, Content]]]] = {}
        self._scheduled = False

    async def get(self, oid: bytes) -> tuple[int, Content]:
        got = self.cache.get(oid)
        if got is not None:
            return got
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, Content]] = loop.create_future()
        self._pending.setdefault(oid, []).append(fut)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush)
        return await fut

    async def get_many(self, ids: Iterable[bytes]) -> dict[bytes, tuple[int, Content]]:
        wanted = list(dict.fromkeys(ids))
        got = await asyncio.gather(*(self.get(oid) for oid in wanted))
        return dict(zip(wanted, got, strict=True))

    def _start_flush(self) -> None:
        # A task, not a direct call: tasks started in this turn still get to add their ids.
        task = asyncio.ensure_future(self._flush())
        task.add_done_callback(_ignore)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._scheduled = False
        try:
            frames = await self.backend.get_objects(list(pending))
        except BaseException as exc:
            for futs in pending.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
            return
        self.read += len(frames)
        for oid, futs in pending.items():
            frame = frames.get(oid)
            try:
                if frame is None:
                    raise MissingObjectError(oid.hex())
                value = self.cache[oid] = self.backend.ids.decode_frame(oid, frame)
            except Exception as exc:
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for f in futs:
                if not f.done():
                    f.set_result(value)

    async def fetch_tree(self, roots: Iterable[bytes]) -> None:
        """Bring every object under ``roots`` into the cache, one batch per level."""
        await fetch_levels(self.get_many, roots, self.cache)

    async def values(self, entries: Sequence[Entry]) -> list[Any]:
        """Python values of entries (fresh containers), fetching the trees of refs in one walk."""
        refs = [e.id for e in entries if type(e) is Ref]
        if refs:
            await self.fetch_tree(refs)
        decoder = Decoder(self.cache)
        with unregistered_as_dicts():  # a diff or a look at a path does not fail on an unknown user type
            return [decoder.build(e.id) if type(e) is Ref else _copy(e) for e in entries]


def _ignore(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


def _copy(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return {k: _copy(v) for k, v in value.items()}
    if t is list:
        return [_copy(v) for v in value]
    return value


# -- entries --------------------------------------------------------------------------------


def node_entries(oid: bytes, kind: int, content: Content) -> dict[str, Entry] | list[Entry]:
    """The entries of a dict or list node: inline values as parsed, specials as Ref or bytes."""
    with unregistered_as_dicts():
        body, specials = parse_node(oid, kind, content)
    check_nesting(oid, body)  # its entries are copied and compared recursively
    if specials:
        keys = list(body) if kind == KIND_DICT else None
        for pos, tag, payload in specials:
            entry = Ref(payload) if tag == TAG_REF else payload
            body[keys[pos] if keys is not None else pos] = entry
    return body  # type: ignore[no-any-return]  # parse_node's body is a dict or list of msgpack values


def dict_entries(oid: bytes, kind: int, content: Content) -> dict[str, Entry]:
    """The entries of a node that must be a dict node (below a dict index, or a dict's root)."""
    body = node_entries(oid, kind, content)
    if not isinstance(body, dict):
        raise CorruptObjectError(oid.hex(), "a list node where a dict node belongs")
    return body


def list_entries(oid: bytes, kind: int, content: Content) -> list[Entry]:
    """The entries of a node that must be a list node (below a list index, or a list's root)."""
    body = node_entries(oid, kind, content)
    if not isinstance(body, list):
        raise CorruptObjectError(oid.hex(), "a dict node where a list node belongs")
    return body


def shape(kind: int, content: Content) -> str:
    """ "dict", "list" or "scalar": what kind of value an object holds (a typed value is a scalar)."""
    if kind == KIND_DICT:
        return "dict"
    if kind == KIND_LIST:
        return "list"
    if kind == KIND_INDEX:
        return "dict" if content[0] == INDEX_DICT else "list"
    return "scalar"


def entry_shape(entry: Entry) -> str | None:
    """The shape of an inline or bytes entry; None for a Ref (its object decides)."""
    t = type(entry)
    if t is Ref:
        return None
    if t is dict:
        return "dict"
    if t is list:
        return "list"
    return "scalar"


def same_entry(a: Entry, b: Entry) -> bool:
    """Whether two entries hold the same value. Canonical encoding makes this exact: equal
    values always get equal entries, so a Ref never equals an inline value."""
    ta, tb = type(a), type(b)
    if ta is not tb:
        return False
    if ta is Ref or ta is bytes:
        return bool(a == b)
    return strict_equal(a, b)


def strict_equal(a: Any, b: Any) -> bool:
    """Equality of values that tells 1, 1.0 and True apart, 0.0 from -0.0, dicts in another
    key order apart, and typed values by their stored form (a datetime's zone included)."""
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        return list(a) == list(b) and all(strict_equal(v, b[k]) for k, v in a.items())
    if ta is list:
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta is float:
        return (bool(a == b) and math.copysign(1.0, a) == math.copysign(1.0, b)) or (a != a and b != b)
    if ta is str or ta is int or ta is bool or ta is bytes or a is None:
        return bool(a == b)
    return typed_key(a) == typed_key(b)


# -- JSON pointers (RFC 6901) -------------------------------------------------------------------


def pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


_BAD_ESCAPE = re.compile(r"~(?![01])")


def parse_pointer(text: str) -> list[str]:
    """The reference tokens of a JSON pointer; InvalidKeyError when it is not one."""
    if text == "":
        return []
    if not text.startswith("/"):
        raise InvalidKeyError(f"{text!r} is not a JSON pointer: it must start with '/' (the root is '')")
    parts = text[1:].split("/")
    for p in parts:
        # RFC 6901: "~" appears only as "~0" (a tilde) or "~1" (a slash); "~2" or a trailing
        # "~" is an error, not literal text.
        if _BAD_ESCAPE.search(p):
            raise InvalidKeyError(f"{text!r} is not a JSON pointer: '~' must be followed by 0 or 1 (RFC 6901)")
    return [p.replace("~1", "/").replace("~0", "~") for p in parts]


async def dict_of(loader: Loader, oid: bytes) -> dict[str, Entry]:
    """Every entry of a stored dict (a node, or an index over runs)."""
    out: dict[str, Entry] = {}
    frontier = [oid]
    while frontier:
        level = await loader.get_many(frontier)
        frontier = []
        for cid in level:
            kind, content = level[cid]
            if kind == KIND_INDEX:
                frontier.extend(c for c, _ in parse_index(cid, content)[1])
            else:
                out.update(dict_entries(cid, kind, content))
    return out


async def list_item(loader: Loader, oid: bytes, index: int) -> Entry:
    """One item of a stored list, reading one node per level (index counts lead the way)."""
    kind, content = await loader.get(oid)
    while kind == KIND_INDEX:
        for cid, count in parse_index(oid, content)[1]:
            if index < count:
                oid = cid
                break
            index -= count
        else:
            raise IndexError(index)
        kind, content = await loader.get(oid)
    return list_entries(oid, kind, content)[index]


async def entry_at(loader: Loader, root: bytes, parts: Sequence[str]) -> Entry:
    """The entry at a JSON pointer below ``root``; NotFoundError when the path does not exist."""
    entry: Entry = Ref(root)
    for depth, part in enumerate(parts):
        where = pointer(parts[: depth + 1])
        what: str | None
        if type(entry) is Ref:
            kind, content = await loader.get(entry.id)
            what = shape(kind, content)
        else:
            what = entry_shape(entry)
        if what == "dict":
            items = entry if type(entry) is dict else await dict_of(loader, entry.id)
            if part not in items:
                raise NotFoundError(f"no key {part!r} at {where or '/'}")
            entry = items[part]
        elif what == "list":
            if not part.isdigit() or (len(part) > 1 and part[0] == "0"):
                raise NotFoundError(f"{part!r} is not a list index (at {where})")
            i = int(part)
            try:
                entry = entry[i] if type(entry) is list else await list_item(loader, entry.id, i)
            except IndexError:
                raise NotFoundError(f"list index {i} is out of range (at {where})") from None
        else:
            raise NotFoundError(f"{where} goes through a value that is neither a dict nor a list")
    return entry


__all__ = [
    "Entry",
    "Loader",
    "Ref",
    "dict_entries",
    "dict_of",
    "entry_at",
    "entry_shape",
    "list_entries",
    "node_entries",
    "parse_pointer",
    "pointer",
    "same_entry",
    "shape",
    "strict_equal",
]
