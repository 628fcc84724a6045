"""Object kinds, object ids and the frame every stored object travels in.

An object is immutable bytes of one kind, named by ``blake3(kind || content)``, or in an
encrypted store by blake3 keyed with the store's id key (``Ids``), so an id reveals nothing
about the content to whoever lacks the key. It is stored as a *frame*: a 3-byte header
(format version, kind, codec) and the content, raw or zstd-compressed. Reading a frame
always decompresses with a size limit and checks the id before any byte of the content is
used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import blake3
import zstandard

from castate.errors import CorruptObjectError, UnsupportedFormatError

# 2: dicts keep insertion order, typed values (MessagePack ext types and "T" objects).
# Version-1 content means the same under version 2 (sorted dicts, no typed values), so a
# reader takes both and a version-1 object may travel in a version-2 frame.
FORMAT_VERSION = 2
READABLE_VERSIONS = frozenset((1, 2))
ID_SIZE = 32

# Object kinds (one ASCII byte each; part of the hashed bytes).
KIND_STR = 0x53  # "S": a str value stored on its own, UTF-8
KIND_BYTES = 0x59  # "Y": a bytes value stored on its own
KIND_CHUNK = 0x52  # "R": one content-defined piece of a chunked value
KIND_CHUNKED = 0x43  # "C": the ordered chunk list of a large value or node
KIND_DICT = 0x44  # "D": a dict node
KIND_LIST = 0x4C  # "L": a list node, or one run of a long list
KIND_INDEX = 0x49  # "I": an index over runs of a long list or dict
KIND_COMMIT = 0x4B  # "K": a commit (a session save)
KIND_TYPED = 0x54  # "T": a typed value (tuple, set, registered type) whose inner value is an object

KIND_NAMES = {
    KIND_STR: "str",
    KIND_BYTES: "bytes",
    KIND_CHUNK: "chunk",
    KIND_CHUNKED: "chunked",
    KIND_DICT: "dict",
    KIND_LIST: "list",
    KIND_INDEX: "index",
    KIND_COMMIT: "commit",
    KIND_TYPED: "typed",
}

# The byte each kind's content is hashed behind (the id covers the kind).
_KIND_PREFIX = {kind: bytes((kind,)) for kind in KIND_NAMES}

CODEC_RAW = 0
CODEC_ZSTD = 1

# No object content may exceed this; bigger values are chunked long before it.
MAX_CONTENT = 64 << 20
ZSTD_LEVEL = 3
# Compressing tiny frames wastes CPU and often grows them.
COMPRESS_MIN = 64

_tls = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_tls, "cctx", None)
    if c is None:
        c = _tls.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "dctx", None)
    if d is None:
        d = _tls.dctx = zstandard.ZstdDecompressor()
    return d


class Ids:
    """How a store names its objects: plain blake3 (``PLAIN``), or blake3 keyed with an
    encrypted store's 32-byte id key. Everything that computes or checks an id asks the
    store's ``Ids``, so one store never mixes the two."""

    __slots__ = ("_h", "key")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("an id key is 32 bytes")
        self.key = key
        self._h: Callable[[bytes], blake3.blake3] = blake3.blake3 if key is None else partial(blake3.blake3, key=key)

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def object_id(self, kind: int, content: bytes | memoryview) -> bytes:
        """The 32-byte id of an object: blake3 over the kind byte and the canonical content."""
        # Hashing one joined buffer measured faster than hashing the prefix, then update(content):
        # the copy is cheap next to blake3, and update() is slower on buffers of 2 KiB and more.
        digest: bytes = self._h((_KIND_PREFIX.get(kind) or bytes((kind,))) + content).digest()
        return digest

    def decode_frame(self, oid: bytes, frame: bytes | memoryview) -> tuple[int, bytes | memoryview]:
        """Check a frame against its id and return (kind, content). Raises CorruptObjectError."""
        kind, content = _open_frame(oid, frame)
        if self._h(_KIND_PREFIX[kind] + content).digest() != oid:
            raise CorruptObjectError(oid.hex(), "content does not match its id")
        return kind, content

    def frame_id(self, frame: bytes | memoryview) -> bytes:
        """The id of the object a frame holds, computed from its content (for stores that keep
        frames without their ids). Raises CorruptObjectError (naming no id) if it does not parse."""
        if len(frame) < 3 or frame[0] not in READABLE_VERSIONS or frame[1] not in _KIND_PREFIX:
            raise CorruptObjectError("?", "not a frame castate reads")
        kind, content = _open_frame(b"", frame)
        digest: bytes = self._h(_KIND_PREFIX[kind] + content).digest()
        return digest


PLAIN = Ids()


def object_id(kind: int, content: bytes | memoryview) -> bytes:
    """The plain (unkeyed) id of an object; a store's own ids come from its ``Ids``."""
    return blake3.blake3((_KIND_PREFIX.get(kind) or bytes((kind,))) + content).digest()


def hex_id(oid: bytes) -> str:
    return oid.hex()


def parse_hex_id(text: str) -> bytes:
    """Turn a 64-digit hex id back into bytes; ValueError if it is not one."""
    if len(text) != 2 * ID_SIZE:
        raise ValueError(f"not an object id: {text!r}")
    return bytes.fromhex(text)


def encode_frame(kind: int, content: bytes, *, compress: bool = True) -> bytes:
    """The stored form of one object: header plus raw or zstd content, whichever is smaller."""
    if compress and len(content) >= COMPRESS_MIN:
        packed = _compressor().compress(content)
        if len(packed) < len(content):
            return bytes((FORMAT_VERSION, kind, CODEC_ZSTD)) + packed
    return bytes((FORMAT_VERSION, kind, CODEC_RAW)) + content


def decode_frame(oid: bytes, frame: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """``PLAIN.decode_frame``: a frame of an unencrypted store, checked against its id."""
    return PLAIN.decode_frame(oid, frame)


def frame_id(frame: bytes | memoryview) -> bytes:
    """``PLAIN.frame_id``."""
    return PLAIN.frame_id(frame)


def _open_frame(oid: bytes, frame: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """(kind, content) of a frame whose header parses, decompressed with a size limit; the
    caller checks the id."""
    if len(frame) < 3:
        raise CorruptObjectError(oid.hex() or "?", "frame shorter than its header")
    version, kind, codec = frame[0], frame[1], frame[2]
    if version not in READABLE_VERSIONS:
        if version > FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"object {oid.hex()} has format version {version}; this castate reads {FORMAT_VERSION}"
            )
        raise CorruptObjectError(oid.hex(), f"unknown format version {version}")
    if kind not in _KIND_PREFIX:
        raise CorruptObjectError(oid.hex(), f"unknown object kind {kind}")
    payload = memoryview(frame)[3:]
    if codec == CODEC_RAW:
        return kind, payload
    if codec == CODEC_ZSTD:
        return kind, _decompress(oid, payload)
    raise CorruptObjectError(oid.hex() or "?", f"unknown codec {codec}")


def _decompress(oid: bytes, payload: memoryview) -> bytes:
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(oid.hex(), f"bad zstd frame: {exc}") from None
    if size < 0 or size > MAX_CONTENT:
        raise CorruptObjectError(oid.hex(), f"zstd frame declares an unusable size {size}")
    try:
        return _decompressor().decompress(payload, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(oid.hex(), f"zstd: {exc}") from None
