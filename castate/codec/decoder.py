"""Rebuild a state tree from verified objects.

Reading is two passes so that I/O can be batched: ``child_ids`` lists what a node points
at (the caller fetches those in one batch per tree level), then ``Decoder.build``
assembles Python values once every object is at hand. Every container is built fresh,
so two places that share an object never share a mutable Python value.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from castate.codec.encoder import MAX_DEPTH
from castate.codec.nodes import (
    INDEX_DICT,
    INDEX_LIST,
    NO_SPECIALS,
    Special,
    parse_body,
    parse_chunked,
    parse_index,
    parse_node,
    parse_specials,
    parse_typed,
)
from castate.codec.objects import (
    KIND_BYTES,
    KIND_CHUNK,
    KIND_CHUNKED,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_NAMES,
    KIND_STR,
    KIND_TYPED,
)
from castate.codec.types import TAG_KEY, BadBody, Unregistered, build_container, unregistered_as_dicts
from castate.errors import CorruptObjectError, MissingObjectError, UnregisteredTypeError

VALUE_KINDS = frozenset((KIND_STR, KIND_BYTES, KIND_CHUNKED, KIND_DICT, KIND_LIST, KIND_INDEX, KIND_TYPED))
_DICT_OR_LIST = frozenset((KIND_DICT, KIND_LIST))
Content = bytes | memoryview


def child_ids(oid: bytes, kind: int, content: Content) -> list[bytes]:
    """Ids of the objects a value object points at (without decoding node bodies)."""
    if kind in _DICT_OR_LIST:
        if content[:4] == NO_SPECIALS:
            return []
        return [ref for _, _, ref in parse_specials(oid, content)[0]]
    if kind == KIND_INDEX:
        return [cid for cid, _ in parse_index(oid, content)[1]]
    if kind == KIND_CHUNKED:
        return [cid for cid, _ in parse_chunked(oid, content)[2]]
    if kind == KIND_TYPED:
        return [parse_typed(oid, content)[1]]
    return []


class Decoder:
    """Assembles values from ``contents`` (id -> (kind, verified content)).

    It recurses per object (the fast way), and when a tree is deeper than Python's stack
    allows (``MAX_DEPTH`` containers, each possibly under index levels, can be) it builds
    the tree again with a stack of its own. Dict and list nodes nested deeper than
    ``MAX_DEPTH``, which castate never writes, are refused as corrupt.
    """

    def __init__(self, contents: dict[bytes, tuple[int, Content]]) -> None:
        self.contents = contents

    def _get(self, oid: bytes, parent: bytes) -> tuple[int, Content]:
        got = self.contents.get(oid)
        if got is None:
            raise MissingObjectError(oid.hex(), f"referenced by {parent.hex()}")
        return got

    def build(self, oid: bytes, parent: bytes | None = None) -> Any:
        try:
            return self._build(oid, parent)
        except Unregistered as exc:
            # Rare: find where the type sits by building again with user types as tagged dicts.
            with unregistered_as_dicts():
                tree = self._build(oid, parent)
            raise UnregisteredTypeError(exc.name, exc.reason, _tagged_path(tree, exc.name)) from None

    def _build(self, oid: bytes, parent: bytes | None) -> Any:
        try:
            return self._value(oid, parent or oid, 0)
        except RecursionError:
            return self._build_with_own_stack(oid, parent or oid)

    def _value(self, oid: bytes, parent: bytes, depth: int) -> Any:
        # The hot path of a read: one call per object visited, dict and list nodes first.
        got = self.contents.get(oid)
        if got is None:
            raise MissingObjectError(oid.hex(), f"referenced by {parent.hex()}")
        kind, content = got
        if kind in _DICT_OR_LIST:
            if depth >= MAX_DEPTH:
                raise _too_deep(oid)
            if content[:4] == NO_SPECIALS:  # most nodes hold no refs: their body is their value
                return parse_body(oid, kind, content[4:])
            body, specials = parse_node(oid, kind, content)
            # A ref's position is a key's index in a dict node, the index itself in a list node.
            keys = list(body) if kind == KIND_DICT else range(len(body))
            for pos, _, ref in specials:
                body[keys[pos]] = self._value(ref, oid, depth + 1)
            return body
        if kind == KIND_INDEX:
            flavor, children = parse_index(oid, content)
            parts = [(cid, count, self._get(cid, oid)[0], self._value(cid, oid, depth)) for cid, count in children]
            return _join(oid, flavor, parts)
        if kind == KIND_TYPED:
            code, inner, name = parse_typed(oid, content)
            return _typed(oid, code, self._value(inner, oid, depth + 1), name)
        return self._leaf(oid, kind, content)

    def _leaf(self, oid: bytes, kind: int, content: Content) -> Any:
        if kind == KIND_STR:
            return _utf8(oid, content)
        if kind == KIND_BYTES:
            return bytes(content)
        if kind == KIND_CHUNKED:
            target, _total, chunks = parse_chunked(oid, content)
            parts = []
            for cid, size in chunks:
                ckind, chunk = self._get(cid, oid)
                if ckind != KIND_CHUNK or len(chunk) != size:
                    raise CorruptObjectError(oid.hex(), f"chunk {cid.hex()} is not a {size}-byte chunk")
                parts.append(chunk)
            data = b"".join(parts)
            return _utf8(oid, data) if target == KIND_STR else data
        raise CorruptObjectError(oid.hex(), f"a {KIND_NAMES.get(kind, kind)} object where a value belongs")

    # -- the same, with a stack of its own ----------------------------------------------------

    def _build_with_own_stack(self, oid: bytes, parent: bytes) -> Any:
        first = self._start(oid, parent, 0)
        if not isinstance(first, _Pending):
            return first
        stack = [first.steps]
        value: Any = None
        while stack:
            try:
                oid, parent, depth = stack[-1].send(value)
            except StopIteration as done:
                stack.pop()
                value = done.value
                continue
            got = self._start(oid, parent, depth)
            if isinstance(got, _Pending):
                stack.append(got.steps)
                value = None
            else:
                value = got
        return value

    def _start(self, oid: bytes, parent: bytes, depth: int) -> Any:
        """The value of ``oid``, or a _Pending whose steps ask for its children's values."""
        kind, content = self._get(oid, parent)
        if kind in (KIND_DICT, KIND_LIST):
            body, specials = _node(oid, kind, content, depth)
            return _Pending(self._fill(oid, kind, body, specials, depth + 1)) if specials else body
        if kind == KIND_INDEX:
            return _Pending(self._index(oid, content, depth))
        if kind == KIND_TYPED:
            return _Pending(self._typed(oid, content, depth))
        return self._leaf(oid, kind, content)

    def _fill(self, oid: bytes, kind: int, body: Any, specials: list[Special], depth: int) -> Steps:
        keys = list(body) if kind == KIND_DICT else range(len(body))
        for pos, _, ref in specials:
            body[keys[pos]] = yield ref, oid, depth
        return body

    def _index(self, oid: bytes, content: Content, depth: int) -> Steps:
        flavor, children = parse_index(oid, content)
        parts = []
        for cid, count in children:
            parts.append((cid, count, self._get(cid, oid)[0], (yield cid, oid, depth)))
        return _join(oid, flavor, parts)

    def _typed(self, oid: bytes, content: Content, depth: int) -> Steps:
        code, inner, name = parse_typed(oid, content)
        return _typed(oid, code, (yield inner, oid, depth + 1), name)


#: The steps of one object's assembly: yields (child id, parent id, depth) and is sent the child's value.
Steps = Generator[tuple[bytes, bytes, int], Any, Any]


class _Pending:
    """An object whose value needs its children's first."""

    __slots__ = ("steps",)

    def __init__(self, steps: Steps) -> None:
        self.steps = steps


def _node(oid: bytes, kind: int, content: Content, depth: int) -> tuple[Any, list[Special]]:
    if depth >= MAX_DEPTH:
        raise _too_deep(oid)
    return parse_node(oid, kind, content)


def _too_deep(oid: bytes) -> CorruptObjectError:
    return CorruptObjectError(oid.hex(), f"nodes nested deeper than {MAX_DEPTH} levels")


def _join(oid: bytes, flavor: int, parts: list[tuple[bytes, int, int, Any]]) -> Any:
    """The list or dict an index node stands for, from its children's (id, count, kind, value)."""
    if flavor == INDEX_LIST:
        out: list[Any] = []
        for cid, count, ckind, part in parts:
            if ckind not in (KIND_LIST, KIND_INDEX) or type(part) is not list or len(part) != count:
                raise CorruptObjectError(oid.hex(), f"child {cid.hex()} is not a {count}-element list")
            out.extend(part)
        return out
    assert flavor == INDEX_DICT
    merged: dict[str, Any] = {}
    for cid, count, ckind, part in parts:
        if ckind not in (KIND_DICT, KIND_INDEX) or type(part) is not dict or len(part) != count:
            raise CorruptObjectError(oid.hex(), f"child {cid.hex()} is not a {count}-key dict")
        merged.update(part)
    return merged


def _typed(oid: bytes, code: int, inner: Any, name: str | None) -> Any:
    try:
        return build_container(code, inner, name)
    except BadBody as exc:
        raise CorruptObjectError(oid.hex(), f"bad typed value: {exc}") from None


def _tagged_path(tree: Any, name: str) -> str:
    """Where the first user type called ``name`` sits in a tree read with tagged dicts."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(tree, ())]
    while stack:
        value, keys = stack.pop()
        t = type(value)
        if t is dict:
            if value.get(TAG_KEY) == name and len(value) == 2 and "value" in value:
                return "state" + "".join(f"[{k!r}]" for k in keys)
            stack.extend((v, (*keys, k)) for k, v in reversed(value.items()))
        elif t is list or t is tuple:
            stack.extend((v, (*keys, i)) for i, v in reversed(list(enumerate(value))))
    return "state"


def _utf8(oid: bytes, data: Content) -> str:
    try:
        return str(data, "utf-8")  # decodes a memoryview in place, without copying it to bytes first
    except UnicodeDecodeError as exc:
        raise CorruptObjectError(oid.hex(), f"str object is not UTF-8: {exc}") from None
