"""Index segments: immutable blobs that say where objects are, so opening a store reads a few
segments instead of every pack's head, and holds 44 bytes per object instead of Python objects.

A segment covers a set of packs completely: their heads (the pack table) and every object
they hold (the entry table, sorted by id, with a fanout table over the ids' leading bits so a
lookup is two integer reads and one bounded search). Writers make segments by merging the
packs that no segment covers with the smaller segments (``plan_merge``), and gc writes one
segment covering everything it kept. docs/format.md §6.2 fixes every byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import blake3

from castate.errors import CorruptFileError, UnsupportedFormatError
from castate.repository.packs.format import MAX_RAW, MAX_SEQ, READ_CHAIN_MAX, PackInfo

INDEX_PREFIX = "index/"
SEGMENT_MAGIC = b"CASTIDX2"
SEGMENT_VERSION = 2
MAX_SEGMENT_BYTES = 1 << 30  # a listed segment larger than this is refused before it is read

# magic, version, fanout bits, n_packs, n_entries
_HEAD = struct.Struct("<8sBB2xII16x")
HEAD_SIZE = _HEAD.size  # 36
# name, chain, seq, raw_len, chain_raw, prev, time_ns, body_off, body_len, size
_PACK = struct.Struct("<32s16sIIQ32sQIIQ")
PACK_SIZE = _PACK.size  # 128
_ENTRY = struct.Struct("<32sIII")  # id, pack (row of the pack table), offset, length
ENTRY_SIZE = _ENTRY.size  # 44
_FAN = struct.Struct("<II")


def fanout_bits(n_entries: int) -> int:
    """Leading id bits the fanout splits on: about four entries per bucket, at most 20 bits."""
    bits = 0
    while bits < 20 and (n_entries >> bits) > 4:
        bits += 1
    return bits


@dataclass(slots=True, eq=False)
class Segment:
    """One parsed segment: its bytes and where its tables start."""

    name: str  # 64 hex digits: blake3 of its bytes
    data: bytes
    n_packs: int
    n_entries: int
    bits: int
    entries_at: int
    fanout_at: int
    packs: list[PackInfo]  # the pack table, without entries (they stay in ``data``)

    @property
    def blob(self) -> str:
        return INDEX_PREFIX + self.name

    def first(self, oid: bytes) -> tuple[int, int, int] | None:
        """(pack row, offset, length) of the first copy of ``oid`` this segment lists, or None
        (the common lookup, without a generator)."""
        k = int.from_bytes(oid[:4], "big") >> (32 - self.bits)
        lo, hi = _FAN.unpack_from(self.data, self.fanout_at + 4 * k)
        if lo >= hi:
            return None
        at = self.data.find(oid, self.entries_at + lo * ENTRY_SIZE, self.entries_at + hi * ENTRY_SIZE)
        if at < 0:
            return None
        if (at - self.entries_at) % ENTRY_SIZE:
            return next(self.find(oid), None)  # the bytes also appear across entries: look properly
        _, row, off, length = _ENTRY.unpack_from(self.data, at)
        return row, off, length

    def find(self, oid: bytes) -> Iterator[tuple[int, int, int]]:
        """(pack row, offset, length) of every copy of ``oid`` this segment lists."""
        k = int.from_bytes(oid[:4], "big") >> (32 - self.bits)
        lo, hi = _FAN.unpack_from(self.data, self.fanout_at + 4 * k)
        if lo >= hi:
            return
        data = self.data
        start = self.entries_at + lo * ENTRY_SIZE
        end = self.entries_at + hi * ENTRY_SIZE
        at = data.find(oid, start, end)
        while at >= 0:
            if (at - self.entries_at) % ENTRY_SIZE == 0:
                _, row, off, length = _ENTRY.unpack_from(data, at)
                yield row, off, length
                at += ENTRY_SIZE
                if at >= end or data[at : at + 32] != oid:
                    return
                continue
            at = data.find(oid, at + 1, end)

    def entries(self) -> Iterator[tuple[bytes, int, int, int]]:
        """Every (id, pack row, offset, length), in id order."""
        view = memoryview(self.data)[self.entries_at : self.entries_at + self.n_entries * ENTRY_SIZE]
        return _ENTRY.iter_unpack(view)


def parse_segment(name: str, data: bytes) -> Segment:
    """A segment from its bytes, checked: its name is their blake3, its tables fit, and every
    pack row passes the checks a pack head does. Entries are checked when a lookup uses them."""
    where = INDEX_PREFIX + name
    if blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest() != name:
        raise CorruptFileError(where, "index segment bytes do not match its name")
    if len(data) < HEAD_SIZE:
        raise CorruptFileError(where, "index segment shorter than its head")
    magic, version, bits, n_packs, n_entries = _HEAD.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptFileError(where, "not a castate index segment (bad magic)")
    if version != SEGMENT_VERSION:
        if version > SEGMENT_VERSION:
            raise UnsupportedFormatError(f"{where} has version {version}; this castate reads {SEGMENT_VERSION}")
        raise CorruptFileError(where, f"unknown index segment version {version}")
    entries_at = HEAD_SIZE + n_packs * PACK_SIZE
    fanout_at = entries_at + n_entries * ENTRY_SIZE
    if bits > 20 or fanout_at + 4 * ((1 << bits) + 1) != len(data):
        raise CorruptFileError(where, "index segment tables do not fit its size")
    first, last = _FAN.unpack_from(data, fanout_at)[0], struct.unpack_from("<I", data, len(data) - 4)[0]
    if first != 0 or last != n_entries:
        raise CorruptFileError(where, "index segment fanout does not cover its entries")
    packs = []
    for row in _PACK.iter_unpack(memoryview(data)[HEAD_SIZE:entries_at]):
        pname, chain, seq, raw_len, chain_raw, prev, time_ns, body_off, body_len, size = row
        if (
            raw_len > MAX_RAW
            or seq > MAX_SEQ
            or chain_raw + raw_len > READ_CHAIN_MAX
            or (seq == 0 and chain_raw)
            or body_off + body_len != size
        ):
            raise CorruptFileError(where, f"index segment lists pack {pname.hex()} with an inconsistent head")
        packs.append(PackInfo(pname.hex(), chain, seq, prev, raw_len, chain_raw, time_ns, body_off, body_len, size))
    return Segment(name, data, n_packs, n_entries, bits, entries_at, fanout_at, packs)


def _pack_row(p: PackInfo) -> bytes:
    return _PACK.pack(
        bytes.fromhex(p.name), p.chain, p.seq, p.raw_len, p.chain_raw, p.prev, p.time_ns, p.body_off, p.body_len, p.size
    )


def make_segment(packs: Iterable[tuple[PackInfo, Iterable[tuple[bytes, int, int]]]]) -> tuple[str, bytes]:
    """Name and bytes of a segment covering ``packs``, each with its (id, offset, length) entries."""
    table: list[PackInfo] = []
    rows: list[tuple[bytes, int, int, int]] = []
    for pack, entries in packs:
        row = len(table)
        table.append(pack)
        rows.extend((oid, row, off, length) for oid, off, length in entries)
    rows.sort()
    bits = fanout_bits(len(rows))
    counts = [0] * ((1 << bits) + 1)
    shift = 256 - bits
    for oid, *_ in rows:
        counts[(int.from_bytes(oid, "big") >> shift) + 1] += 1
    for k in range(1, len(counts)):
        counts[k] += counts[k - 1]
    parts = [_HEAD.pack(SEGMENT_MAGIC, SEGMENT_VERSION, bits, len(table), len(rows))]
    parts.extend(map(_pack_row, table))
    parts.extend(_ENTRY.pack(*r) for r in rows)
    parts.append(struct.pack(f"<{len(counts)}I", *counts))
    data = b"".join(parts)
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest(), data


__all__ = [
    "ENTRY_SIZE",
    "INDEX_PREFIX",
    "MAX_SEGMENT_BYTES",
    "PACK_SIZE",
    "Segment",
    "fanout_bits",
    "make_segment",
    "parse_segment",
]
