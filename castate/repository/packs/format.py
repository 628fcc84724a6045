"""The bytes of a format-2 pack: one immutable blob per save, named by its blake3.

A pack holds object frames, concatenated into its *raw* bytes and zstd-compressed as the
continuation of a *chain*: one zstd stream spanning successive packs of one stream (a
session), flushed at the end of each pack, so a save compresses against the saves before
it. A chain is cut once it holds ``CHAIN_MAX_RAW`` raw bytes, which bounds what reading
any one object decompresses. docs/format.md §6 fixes every byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import blake3

from castate.errors import CorruptFileError, UnsupportedFormatError

PACK_MAGIC = b"CASTPAK2"
PACK_VERSION = 3  # what writers make: frame lengths in the pack, ids in index segments
READ_VERSIONS = (2, 3)  # 2: every object's id, offset and length in the pack
PACK_PREFIX = "packs/"
ZERO_ID = bytes(32)

CHAIN_MAX_RAW = 1 << 20  # raw bytes per chain: bounds read amplification (docs/performance.md)
PACK_MAX_RAW = 8 << 20  # a save with more new bytes is split into several packs
MAX_ENTRIES = 1 << 20
# What readers accept: a pack, or a chain of packs, declaring more raw bytes than any writer
# makes (one 64 MiB object alone; chains cut at CHAIN_MAX_RAW, at most 16 MiB) is refused as
# damage before anything is decompressed.
MAX_RAW = 80 << 20
READ_CHAIN_MAX = 96 << 20
MAX_CHAIN_SETTING = 16 << 20
MAX_SEQ = 1 << 22  # a chain of more packs than this is damage (each pack holds at least one frame)

# magic, version, flags, n, chain id, seq, raw_len, chain_raw, prev, time_ns, body_len
_HEAD = struct.Struct("<8sBB2xI16sIIQ32sQI4x")
HEAD_SIZE = _HEAD.size  # 96
_ENTRY = struct.Struct("<32sII")  # version 2: id, offset in the raw bytes, length of its frame
ENTRY_SIZE = _ENTRY.size  # 40
LENGTH_SIZE = 4  # version 3: the length of each frame, in raw order
FLAG_CHAIN_START = 1


@dataclass(slots=True, eq=False)
class PackInfo:
    """What a reader knows of one pack from its head and entries."""

    name: str  # 64 hex digits: blake3 of the whole blob
    chain: bytes  # 16-byte chain id
    seq: int  # position in the chain, from 0
    prev: bytes  # name (32 bytes) of the previous pack of the chain, zeros at seq 0
    raw_len: int
    chain_raw: int  # raw bytes of the chain before this pack
    time_ns: int
    body_off: int
    body_len: int
    size: int  # bytes of the blob
    # (id, offset, length): from a version-2 head, or kept by the writer that made the pack
    entries: list[tuple[bytes, int, int]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) from a version-3 head
    version: int = PACK_VERSION

    @property
    def blob(self) -> str:
        return PACK_PREFIX + self.name


def pack_name(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def make_pack(
    frames: list[tuple[bytes, bytes | memoryview]],
    body: bytes,
    *,
    chain: bytes,
    seq: int,
    prev: bytes,
    raw_len: int,
    chain_raw: int,
    time_ns: int,
) -> tuple[PackInfo, bytes]:
    """A pack's head as its writer knows it (with the ids, which the pack itself does not
    hold: they go into an index segment), and its bytes: head, frame lengths, body."""
    entries: list[tuple[bytes, int, int]] = []
    off = 0
    for oid, frame in frames:
        entries.append((oid, off, len(frame)))
        off += len(frame)
    if off != raw_len:
        raise ValueError("raw_len does not match the frames")
    flags = FLAG_CHAIN_START if seq == 0 else 0
    head = _HEAD.pack(
        PACK_MAGIC, PACK_VERSION, flags, len(frames), chain, seq, raw_len, chain_raw, prev, time_ns, len(body)
    )
    lengths = struct.pack(f"<{len(entries)}I", *(length for _, _, length in entries))
    data = b"".join((head, lengths, body))
    body_off = HEAD_SIZE + LENGTH_SIZE * len(entries)
    info = PackInfo(
        pack_name(data), chain, seq, prev, raw_len, chain_raw, time_ns, body_off, len(body), len(data), entries
    )
    return info, data


def encode_pack(frames: list[tuple[bytes, bytes | memoryview]], body: bytes, **head: Any) -> bytes:
    """A pack's bytes alone (see ``make_pack``)."""
    return make_pack(frames, body, **head)[1]


def entries_end(head: bytes | memoryview, where: str) -> int:
    """How many leading bytes of a pack hold its head and entries or lengths (read from the
    head alone)."""
    fields = _parse_head(head, where)
    return HEAD_SIZE + (ENTRY_SIZE if fields[1] == 2 else LENGTH_SIZE) * fields[3]


def _parse_head(
    data: bytes | memoryview, where: str
) -> tuple[int, int, int, int, bytes, int, int, int, bytes, int, int]:
    if len(data) < HEAD_SIZE:
        raise CorruptFileError(where, "pack shorter than its head")
    fields = _HEAD.unpack_from(data, 0)
    magic, version = fields[0], fields[1]
    if magic != PACK_MAGIC:
        raise CorruptFileError(where, "not a castate pack (bad magic)")
    if version not in READ_VERSIONS:
        if version > PACK_VERSION:
            raise UnsupportedFormatError(f"{where} has pack version {version}; this castate reads {PACK_VERSION}")
        raise CorruptFileError(where, f"unknown pack version {version}")
    if fields[3] > MAX_ENTRIES:
        raise CorruptFileError(where, f"pack declares {fields[3]} objects")
    return fields


def parse_pack_head(name: str, data: bytes | memoryview, size: int) -> PackInfo:
    """Head and entries (version 2) or frame spans (version 3) of a pack of ``size`` bytes from
    its first bytes; CorruptFileError if they do not hold together (a reader never trusts a
    length it has not checked)."""
    where = PACK_PREFIX + name
    _, version, flags, n, chain, seq, raw_len, chain_raw, prev, time_ns, body_len = _parse_head(data, where)
    body_off = HEAD_SIZE + (ENTRY_SIZE if version == 2 else LENGTH_SIZE) * n
    if len(data) < body_off:
        raise CorruptFileError(where, "pack entries cut short")
    if body_off + body_len != size:
        raise CorruptFileError(where, f"pack of {size} bytes declares {body_off + body_len}")
    if (
        raw_len > MAX_RAW
        or seq > MAX_SEQ
        or chain_raw > READ_CHAIN_MAX
        or (seq == 0) != bool(flags & FLAG_CHAIN_START)
        or (seq == 0 and chain_raw)
    ):
        raise CorruptFileError(where, "inconsistent pack head")
    info = PackInfo(name, chain, seq, prev, raw_len, chain_raw, time_ns, body_off, body_len, size, version=version)
    if version == 2:
        info.entries = list(_ENTRY.iter_unpack(memoryview(data)[HEAD_SIZE:body_off]))
        for oid, off, length in info.entries:
            if off + length > raw_len or length < 3:
                raise CorruptFileError(where, f"object {oid.hex()} lies outside the pack's raw bytes")
        return info
    off = 0
    for (length,) in struct.iter_unpack("<I", memoryview(data)[HEAD_SIZE:body_off]):
        if length < 3:
            raise CorruptFileError(where, "pack lists a frame shorter than its header")
        info.spans.append((off, length))
        off += length
    if off != raw_len:
        raise CorruptFileError(where, f"pack frame lengths add up to {off}, not its {raw_len} raw bytes")
    return info


__all__ = [
    "CHAIN_MAX_RAW",
    "ENTRY_SIZE",
    "HEAD_SIZE",
    "LENGTH_SIZE",
    "MAX_CHAIN_SETTING",
    "MAX_RAW",
    "MAX_SEQ",
    "PACK_MAX_RAW",
    "PACK_PREFIX",
    "READ_CHAIN_MAX",
    "READ_VERSIONS",
    "ZERO_ID",
    "PackInfo",
    "encode_pack",
    "entries_end",
    "make_pack",
    "pack_name",
    "parse_pack_head",
]
