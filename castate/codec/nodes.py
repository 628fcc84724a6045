"""Byte layouts of node contents: dict/list nodes, index nodes, chunk lists and commits.

Node bodies are MessagePack (decoded by ormsgpack). Every parser here is strict: anything
malformed raises CorruptObjectError, never a Python error from deep inside, because
hashed content can still be malicious.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass, field
from typing import Any

import ormsgpack

from castate.codec.objects import (
    ID_SIZE,
    KIND_BYTES,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_STR,
)
from castate.codec.types import (
    EXT_FROZENSET,
    EXT_NDARRAY,
    EXT_SET,
    EXT_TUPLE,
    EXT_USER,
    TAGGED_ALL,
    HookError,
    Unregistered,
    ext_hook,
    reading_user_types,
)
from castate.errors import CorruptObjectError

# The tag of an entry held out of line (a "special"): a 32-byte object id.
TAG_REF = 0x72

_U32 = struct.Struct("<I")
_SPECIAL_REF = struct.Struct("<I32s")
_INDEX_ENTRY = struct.Struct("<32sQ")
_CHUNK_ENTRY = struct.Struct("<32sI")
_CHUNKED_HEAD = struct.Struct("<BQ")
NO_SPECIALS = b"\x00\x00\x00\x00"

INDEX_LIST = 0
INDEX_DICT = 1

Special = tuple[int, int, bytes]  # (position, TAG_REF, object id)
NIL = b"\xc0"


def encode_node(specials: list[Special], body: bytes) -> bytes:
    """Content of a dict or list node: the table of refs, then the MessagePack body."""
    if not specials:
        return NO_SPECIALS + body
    return _U32.pack(len(specials)) + b"".join(_SPECIAL_REF.pack(pos, ref) for pos, _, ref in specials) + body


def parse_specials(oid: bytes, content: bytes | memoryview) -> tuple[list[Special], int]:
    """The refs table of a dict or list node and the offset where its body starts."""
    try:
        n = _U32.unpack_from(content, 0)[0]
        if n == 0:
            return [], 4
        end = 4 + _SPECIAL_REF.size * n
        if end > len(content):
            raise ValueError("truncated refs table")
        specials = [(pos, TAG_REF, ref) for pos, ref in _SPECIAL_REF.iter_unpack(content[4:end])]
    except (struct.error, ValueError) as exc:
        raise CorruptObjectError(oid.hex(), f"bad node: {exc}") from None
    positions = [s[0] for s in specials]
    if not all(map(operator.lt, positions, positions[1:])):
        raise CorruptObjectError(oid.hex(), "bad node: refs out of order")
    return specials, end


def parse_node(oid: bytes, kind: int, content: bytes | memoryview, tagged: bool = False) -> tuple[Any, list[Special]]:
    """The body (refs still nil) and the refs table of a dict or list node.

    With ``tagged``, user types in the body read as tagged dicts and no user code runs
    (for the walks of maintenance, which read every object of a store)."""
    specials, off = parse_specials(oid, content)
    if tagged:
        with reading_user_types(TAGGED_ALL):
            body = parse_body(oid, kind, content[off:])
    else:
        body = parse_body(oid, kind, content[off:])
    if specials and specials[-1][0] >= len(body):
        raise CorruptObjectError(oid.hex(), "ref position out of range")
    return body, specials


def parse_body(oid: bytes, kind: int, data: bytes | memoryview) -> Any:
    """The MessagePack body of a dict or list node, a dict or a list as its kind says.

    A node whose refs table is empty (its content starts with ``NO_SPECIALS``) is this
    body and nothing else, so a reader can take its value with this one call.
    """
    try:
        body = ormsgpack.unpackb(data, ext_hook=ext_hook)
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError) as exc:
        raise _body_error(oid, exc) from None
    want = dict if kind == KIND_DICT else list
    if type(body) is not want:
        raise CorruptObjectError(oid.hex(), f"node body is not a {want.__name__}")
    return body


def _body_error(oid: bytes, exc: Exception) -> Exception:
    """The error of a node body that did not decode: a typed value's own failure when the
    ext_hook kept one (a body not matching its tag, or a user type not registered)."""
    kept = HookError.take()
    if type(kept) is Unregistered:
        return kept
    if kept is not None:
        return CorruptObjectError(oid.hex(), f"bad typed value: {kept}")
    return CorruptObjectError(oid.hex(), f"bad node body: {exc}")


def check_nesting(oid: bytes, body: Any) -> None:
    """Refuse a node body whose inline values nest deeper than 255 containers (castate never
    writes one: its states stop at 200; walking such a value recursively would exhaust
    Python's stack). ormsgpack's encoder checks the depth at C speed."""
    try:
        ormsgpack.packb(body, option=_NESTING_OPTIONS, default=_opaque)
    except TypeError as exc:
        raise CorruptObjectError(oid.hex(), f"bad node body: {exc}") from None


def _opaque(_value: Any) -> Any:
    # A typed value in a body: nesting inside it was bounded when its ext was decoded.
    return None


# Typed values go to ``_opaque`` instead of being encoded (ormsgpack refuses some, such as a
# time with a zone).
_NESTING_OPTIONS = (
    ormsgpack.OPT_NON_STR_KEYS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_ENUM
)


_TYPED_HEAD = struct.Struct("<B32s")


def encode_typed(code: int, inner: bytes, name: str | None) -> bytes:
    """Content of a ``T`` object: ext type code, the inner value's object id, then the
    registered name (UTF-8) for a user type."""
    return _TYPED_HEAD.pack(code, inner) + (name.encode("utf-8") if name is not None else b"")


def parse_typed(oid: bytes, content: bytes | memoryview) -> tuple[int, bytes, str | None]:
    """(code, inner id, name) of a ``T`` object; CorruptObjectError when malformed."""
    if len(content) < _TYPED_HEAD.size:
        raise CorruptObjectError(oid.hex(), "typed object shorter than its head")
    code, inner = _TYPED_HEAD.unpack_from(content, 0)
    rest = bytes(content[_TYPED_HEAD.size :])
    if code == EXT_USER:
        try:
            name: str | None = rest.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptObjectError(oid.hex(), "typed object name is not UTF-8") from None
        if not name:
            raise CorruptObjectError(oid.hex(), "registered-type object without a name")
    elif code in (EXT_TUPLE, EXT_SET, EXT_FROZENSET, EXT_NDARRAY) and not rest:
        name = None
    else:
        raise CorruptObjectError(oid.hex(), f"bad typed object (code {code})")
    return code, inner, name


def encode_index(flavor: int, children: list[tuple[bytes, int]]) -> bytes:
    """Content of an index node over runs: flavor byte, then (child id, element count) pairs."""
    return bytes((flavor,)) + b"".join(_INDEX_ENTRY.pack(cid, count) for cid, count in children)


def parse_index(oid: bytes, content: bytes | memoryview) -> tuple[int, list[tuple[bytes, int]]]:
    if len(content) < 1 + _INDEX_ENTRY.size or (len(content) - 1) % _INDEX_ENTRY.size:
        raise CorruptObjectError(oid.hex(), "bad index node length")
    flavor = content[0]
    if flavor not in (INDEX_LIST, INDEX_DICT):
        raise CorruptObjectError(oid.hex(), f"unknown index flavor {flavor}")
    return flavor, list(_INDEX_ENTRY.iter_unpack(memoryview(content)[1:]))


CHUNKED_TARGETS = (KIND_STR, KIND_BYTES)


def encode_chunked(target: int, total: int, chunks: list[tuple[bytes, int]]) -> bytes:
    """Content of a chunk list: target kind, total length, then (chunk id, length) pairs."""
    return _CHUNKED_HEAD.pack(target, total) + b"".join(_CHUNK_ENTRY.pack(c, n) for c, n in chunks)


def parse_chunked(oid: bytes, content: bytes | memoryview) -> tuple[int, int, list[tuple[bytes, int]]]:
    head = _CHUNKED_HEAD.size
    if len(content) < head or (len(content) - head) % _CHUNK_ENTRY.size:
        raise CorruptObjectError(oid.hex(), "bad chunk list length")
    target, total = _CHUNKED_HEAD.unpack_from(content, 0)
    if target not in CHUNKED_TARGETS:
        raise CorruptObjectError(oid.hex(), f"unknown chunked target kind {target}")
    chunks = list(_CHUNK_ENTRY.iter_unpack(memoryview(content)[head:]))
    if sum(n for _, n in chunks) != total:
        raise CorruptObjectError(oid.hex(), "chunk lengths do not add up")
    return target, total, chunks


@dataclass(frozen=True, slots=True)
class Commit:
    """One save of a state: its root, parents, session, optional name, time and user metadata."""

    root: bytes
    parents: tuple[bytes, ...]
    session: str | None
    time_ns: int
    name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def encode_commit(c: Commit) -> bytes:
    body = ormsgpack.packb(
        {"meta": c.meta, "name": c.name, "session": c.session, "time": c.time_ns},
        option=ormsgpack.OPT_SORT_KEYS,
    )
    return c.root + _U32.pack(len(c.parents)) + b"".join(c.parents) + body


def parse_commit(oid: bytes, content: bytes | memoryview) -> Commit:
    try:
        root = bytes(content[:ID_SIZE])
        n = _U32.unpack_from(content, ID_SIZE)[0]
        off = ID_SIZE + 4
        if off + n * ID_SIZE > len(content):  # checked first: a damaged count must not build billions of ids
            raise ValueError(f"{n} parents do not fit in {len(content)} bytes")
        parents = tuple(bytes(content[off + i * ID_SIZE : off + (i + 1) * ID_SIZE]) for i in range(n))
        off += n * ID_SIZE
        body = ormsgpack.unpackb(content[off:])
        session, name, t, meta = body["session"], body["name"], body["time"], body["meta"]
        if not (
            (session is None or type(session) is str)
            and (name is None or type(name) is str)
            and type(t) is int
            and type(meta) is dict
        ):
            raise ValueError("bad commit field types")
    except (struct.error, KeyError, TypeError, ValueError, ormsgpack.MsgpackDecodeError) as exc:
        raise CorruptObjectError(oid.hex(), f"bad commit: {exc}") from None
    return Commit(root=root, parents=parents, session=session, time_ns=t, name=name, meta=meta)


NODE_KINDS = (KIND_DICT, KIND_LIST, KIND_INDEX)
