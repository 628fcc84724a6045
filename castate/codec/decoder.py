"""Rebuild a state tree from verified objects.

Reading is two passes so that I/O can be batched: ``child_ids`` lists what a node points
at (the caller fetches those in one batch per tree level), then ``Decoder.build``
assembles Python values once every object is at hand. Every container is built fresh,
so two places that share an object never share a mutable Python value.
"""

from __future__ import annotations

from typing import Any

from castate.codec.nodes import (
    INDEX_DICT,
    INDEX_LIST,
    NO_SPECIALS,
    parse_chunked,
    parse_index,
    parse_node,
    parse_specials,
)
from castate.codec.objects import (
    ID_SIZE,
    KIND_BYTES,
    KIND_CHUNK,
    KIND_CHUNKED,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_NAMES,
    KIND_STR,
)
from castate.errors import CorruptObjectError, MissingObjectError

VALUE_KINDS = frozenset((KIND_STR, KIND_BYTES, KIND_CHUNKED, KIND_DICT, KIND_LIST, KIND_INDEX))
Content = bytes | memoryview


def child_ids(oid: bytes, kind: int, content: Content) -> list[bytes]:
    """Ids of the objects a value object points at (without decoding node bodies)."""
    if kind in (KIND_DICT, KIND_LIST):
        if content[:4] == NO_SPECIALS:
            return []
        return [ref for _, _, ref in parse_specials(oid, content)[0]]
    if kind == KIND_INDEX:
        return [cid for cid, _ in parse_index(oid, content)[1]]
    if kind == KIND_CHUNKED:
        return [cid for cid, _ in parse_chunked(oid, content)[2]]
    return []


class Decoder:
    """Assembles values from ``contents`` (id -> (kind, verified content))."""

    def __init__(self, contents: dict[bytes, tuple[int, Content]]) -> None:
        self.contents = contents

    def _get(self, oid: bytes, parent: bytes) -> tuple[int, Content]:
        got = self.contents.get(oid)
        if got is None:
            raise MissingObjectError(oid.hex(), f"referenced by {parent.hex()}")
        return got

    def build(self, oid: bytes, parent: bytes | None = None) -> Any:
        kind, content = self._get(oid, parent or oid)
        if kind in (KIND_DICT, KIND_LIST):
            body, specials = parse_node(oid, kind, content)
            if specials:
                keys = list(body) if kind == KIND_DICT else None
                for pos, _, ref in specials:
                    body[keys[pos] if keys is not None else pos] = self._value(ref, oid)
            return body
        if kind == KIND_STR:
            return _utf8(oid, content)
        if kind == KIND_BYTES:
            return bytes(content)
        if kind == KIND_INDEX:
            return self._index(oid, content)
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

    def _value(self, oid: bytes, parent: bytes) -> Any:
        if len(oid) != ID_SIZE:
            raise CorruptObjectError(parent.hex(), "bad ref")
        return self.build(oid, parent)

    def _index(self, oid: bytes, content: Content) -> Any:
        flavor, children = parse_index(oid, content)
        if flavor == INDEX_LIST:
            out: list[Any] = []
            for cid, count in children:
                ckind = self._get(cid, oid)[0]
                part = self.build(cid, oid)
                if ckind not in (KIND_LIST, KIND_INDEX) or type(part) is not list or len(part) != count:
                    raise CorruptObjectError(oid.hex(), f"child {cid.hex()} is not a {count}-element list")
                out.extend(part)
            return out
        assert flavor == INDEX_DICT
        merged: dict[str, Any] = {}
        for cid, count in children:
            ckind = self._get(cid, oid)[0]
            part = self.build(cid, oid)
            if ckind not in (KIND_DICT, KIND_INDEX) or type(part) is not dict or len(part) != count:
                raise CorruptObjectError(oid.hex(), f"child {cid.hex()} is not a {count}-key dict")
            merged.update(part)
        return merged


def _utf8(oid: bytes, data: Content) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptObjectError(oid.hex(), f"str object is not UTF-8: {exc}") from None
