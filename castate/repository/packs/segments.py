"""Index segments: immutable blobs that say where objects are, so opening a store reads a few
segments instead of every pack's head, and holds 48 bytes per object instead of Python objects.

A segment covers a set of packs completely: their heads (the pack table, sorted by name) and
every object they hold (the entries, sorted by id, with a fanout table over the ids' leading
bits so a lookup is two integer reads and one bounded search). An entry names its pack by the
first 8 bytes of the pack's name, not by a row, so merging segments is sorting their entries'
bytes together. Pack rows are parsed only when a lookup or a chain needs them. Each save
commits a segment for its packs; writers merge segments as they go, and gc writes one segment
covering everything it kept. docs/format.md §6.2 fixes every byte.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import blake3

from castate.errors import CorruptFileError, UnsupportedFormatError
from castate.repository.packs.format import MAX_RAW, MAX_SEQ, READ_CHAIN_MAX, PackInfo

INDEX_PREFIX = "index/"
SEGMENT_MAGIC = b"CASTIDX2"
SEGMENT_VERSION = 2
MAX_SEGMENT_BYTES = 1 << 30  # a listed segment larger than this is refused before it is read
THREADED_HASH = 4 << 20

# magic, version, fanout bits, n_packs, n_entries
_HEAD = struct.Struct("<8sBB2xII16x")
HEAD_SIZE = _HEAD.size  # 36
# name, chain, seq, raw_len, chain_raw, prev, time_ns, body_off, body_len, size
_PACK = struct.Struct("<32s16sIIQ32sQIIQ")
PACK_SIZE = _PACK.size  # 128
_ENTRY = struct.Struct("<32s8sII")  # id, pack key (first 8 bytes of its name), offset, length
ENTRY_SIZE = _ENTRY.size  # 48
_SPAN = struct.Struct("<II")
_FAN = struct.Struct("<II")


def _hash(data: bytes) -> str:
    """blake3 hex of a segment: on several threads only when it is large (starting threads
    costs more than hashing a save's segment)."""
    threads = blake3.blake3.AUTO if len(data) >= THREADED_HASH else 1
    return blake3.blake3(data, max_threads=threads).hexdigest()


def fanout_bits(n_entries: int) -> int:
    """Leading id bits the fanout splits on: about four entries per bucket, at most 20 bits."""
    bits = 0
    while bits < 20 and (n_entries >> bits) > 4:
        bits += 1
    return bits


@dataclass(slots=True, eq=False)
class Segment:
    """One segment: its bytes, where its tables start, and what lookups parsed of its packs."""

    name: str  # 64 hex digits: blake3 of its bytes
    data: bytes
    n_packs: int
    n_entries: int
    bits: int
    entries_at: int
    fanout_at: int
    _keys: dict[bytes, int] | None = None  # pack key -> row
    _rows: dict[int, PackInfo | None] = field(default_factory=dict)  # row -> parsed (None: refused)
    _chains: dict[bytes, list[int]] | None = None  # chain id -> rows
    refused: dict[str, str] = field(default_factory=dict)  # pack name -> why its row was refused

    @property
    def blob(self) -> str:
        return INDEX_PREFIX + self.name

    def first(self, oid: bytes) -> tuple[bytes, int, int] | None:
        """(pack key, offset, length) of the first copy of ``oid`` this segment lists, or None."""
        k = int.from_bytes(oid[:4], "big") >> (32 - self.bits)
        lo, hi = _FAN.unpack_from(self.data, self.fanout_at + 4 * k)
        hi = min(hi, self.n_entries)  # a hostile fanout never sends a search past the entries
        if lo >= hi:
            return None
        at = self.data.find(oid, self.entries_at + lo * ENTRY_SIZE, self.entries_at + hi * ENTRY_SIZE)
        if at < 0:
            return None
        if (at - self.entries_at) % ENTRY_SIZE:
            return next(self.find(oid), None)  # the bytes also appear across entries: look properly
        return self.data[at + 32 : at + 40], *_SPAN.unpack_from(self.data, at + 40)

    def find(self, oid: bytes) -> Iterator[tuple[bytes, int, int]]:
        """(pack key, offset, length) of every copy of ``oid`` this segment lists."""
        k = int.from_bytes(oid[:4], "big") >> (32 - self.bits)
        lo, hi = _FAN.unpack_from(self.data, self.fanout_at + 4 * k)
        hi = min(hi, self.n_entries)
        if lo >= hi:
            return
        data, start = self.data, self.entries_at
        end = start + hi * ENTRY_SIZE
        at = data.find(oid, start + lo * ENTRY_SIZE, end)
        while at >= 0:
            if (at - start) % ENTRY_SIZE:
                at = data.find(oid, at + 1, end)
                continue
            yield data[at + 32 : at + 40], *_SPAN.unpack_from(data, at + 40)
            at += ENTRY_SIZE
            if at >= end or data[at : at + 32] != oid:
                return

    def entries(self) -> Iterator[tuple[bytes, bytes, int, int]]:
        """Every (id, pack key, offset, length), in id order."""
        view = memoryview(self.data)[self.entries_at : self.entries_at + self.n_entries * ENTRY_SIZE]
        return _ENTRY.iter_unpack(view)

    def records(self) -> list[bytes]:
        """The entries as 48-byte strings (what a merge sorts together)."""
        data, start = self.data, self.entries_at
        return [data[at : at + ENTRY_SIZE] for at in range(start, start + self.n_entries * ENTRY_SIZE, ENTRY_SIZE)]

    def row_of(self, key: bytes) -> int | None:
        if self._keys is None:
            table = memoryview(self.data)[HEAD_SIZE : HEAD_SIZE + self.n_packs * PACK_SIZE]
            self._keys = {bytes(table[r * PACK_SIZE : r * PACK_SIZE + 8]): r for r in range(self.n_packs)}
        return self._keys.get(key)

    def pack_at(self, row: int) -> PackInfo | None:
        """The pack in ``row``, parsed and checked as a pack head is (None if refused)."""
        if row in self._rows:
            return self._rows[row]
        pname, chain, seq, raw_len, chain_raw, prev, time_ns, body_off, body_len, size = _PACK.unpack_from(
            self.data, HEAD_SIZE + row * PACK_SIZE
        )
        pack: PackInfo | None = PackInfo(
            pname.hex(), chain, seq, prev, raw_len, chain_raw, time_ns, body_off, body_len, size
        )
        if (
            raw_len > MAX_RAW
            or seq > MAX_SEQ
            or chain_raw + raw_len > READ_CHAIN_MAX
            or (seq == 0 and chain_raw)
            or body_off + body_len != size
        ):
            self.refused[pname.hex()] = "the index segment lists it with an inconsistent head"
            pack = None
        self._rows[row] = pack
        return pack

    def pack(self, key: bytes) -> PackInfo | None:
        row = self.row_of(key)
        return None if row is None else self.pack_at(row)

    def chain_rows(self, chain_id: bytes) -> list[int]:
        """Rows of the packs of one chain."""
        if self._chains is None:
            chains: dict[bytes, list[int]] = {}
            data = self.data
            for row in range(self.n_packs):
                at = HEAD_SIZE + row * PACK_SIZE + 32
                chains.setdefault(data[at : at + 16], []).append(row)
            self._chains = chains
        return self._chains.get(chain_id, [])

    def check(self) -> list[str]:
        """What lookups would not notice (fsck reads it): entries out of id order, so lookups
        miss objects; a fanout that does not count them; two packs sharing a key; entries that
        name no pack of the table or lie outside their pack."""
        problems: list[str] = []
        keys = [self.data[HEAD_SIZE + r * PACK_SIZE : HEAD_SIZE + r * PACK_SIZE + 8] for r in range(self.n_packs)]
        if len(set(keys)) < len(keys):
            problems.append(f"{self.blob}: two packs of its table share the first 8 bytes of their names")
        fan = [0] * ((1 << self.bits) + 1)
        shift = 32 - self.bits
        before = b""
        unsorted = nameless = outside = 0
        for oid, key, off, length in self.entries():
            if oid < before:
                unsorted += 1
            before = oid
            fan[(int.from_bytes(oid[:4], "big") >> shift) + 1] += 1
            pack = self.pack(key)
            if pack is None:
                nameless += 1
            elif off + length > pack.raw_len or length < 3:
                outside += 1
        for k in range(1, len(fan)):
            fan[k] += fan[k - 1]
        if list(struct.unpack_from(f"<{len(fan)}I", self.data, self.fanout_at)) != fan:
            problems.append(f"{self.blob}: its fanout does not count its entries (lookups miss objects)")
        if unsorted:
            problems.append(f"{self.blob}: {unsorted} entries out of id order (lookups miss objects)")
        if nameless:
            problems.append(f"{self.blob}: {nameless} entries name no pack of its table")
        if outside:
            problems.append(f"{self.blob}: {outside} entries lie outside their pack's raw bytes")
        return problems

    def pack_rows(self) -> list[bytes]:
        """The pack table's rows as they are (what a merge copies)."""
        data = self.data
        return [data[HEAD_SIZE + r * PACK_SIZE : HEAD_SIZE + (r + 1) * PACK_SIZE] for r in range(self.n_packs)]

    def pack_names(self) -> list[str]:
        data = self.data
        return [data[HEAD_SIZE + r * PACK_SIZE : HEAD_SIZE + r * PACK_SIZE + 32].hex() for r in range(self.n_packs)]


def parse_segment(name: str, data: bytes) -> Segment:
    """A segment from its bytes, checked: its name is their blake3 and its tables fit its size.
    Pack rows are checked when first used, entries when a lookup uses them."""
    where = INDEX_PREFIX + name
    if _hash(data) != name:
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
    return Segment(name, data, n_packs, n_entries, bits, entries_at, fanout_at)


def _pack_row(p: PackInfo) -> bytes:
    return _PACK.pack(
        bytes.fromhex(p.name), p.chain, p.seq, p.raw_len, p.chain_raw, p.prev, p.time_ns, p.body_off, p.body_len, p.size
    )


def make_segment(
    packs: Iterable[tuple[PackInfo, Iterable[tuple[bytes, int, int]]]],
    records: Iterable[bytes] = (),
    pack_rows: Iterable[bytes] = (),
) -> tuple[str, bytes]:
    """Name and bytes of a segment covering ``packs``, each with its (id, offset, length)
    entries, and the packs of ``pack_rows`` (rows of other segments' pack tables) with their
    entries among ``records`` (48-byte entries of those segments). A pack or an entry given
    twice is written once."""
    table: dict[bytes, bytes] = {row[:32]: row for row in pack_rows}
    rows: list[bytes] = list(records)
    for pack, entries in packs:
        key = bytes.fromhex(pack.name[:16])
        table[bytes.fromhex(pack.name)] = _pack_row(pack)
        rows.extend(_ENTRY.pack(oid, key, off, length) for oid, off, length in entries)
    rows.sort()
    rows = list(dict.fromkeys(rows))  # copies of one entry from overlapping segments sit side by side
    bits = fanout_bits(len(rows))
    fan = [0] * ((1 << bits) + 1)
    joined = b"".join(rows)
    if rows:
        counts = Counter(k >> (32 - bits) for (k,) in struct.iter_unpack(">I44x", joined))
        for k, c in counts.items():
            fan[k + 1] = c
        for k in range(1, len(fan)):
            fan[k] += fan[k - 1]
    parts = [
        _HEAD.pack(SEGMENT_MAGIC, SEGMENT_VERSION, bits, len(table), len(rows)),
        *(table[n] for n in sorted(table)),
        joined,
        struct.pack(f"<{len(fan)}I", *fan),
    ]
    data = b"".join(parts)
    return _hash(data), data


def key_of(name: str) -> bytes:
    """The 8 bytes by which entries name a pack."""
    return bytes.fromhex(name[:16])


__all__ = [
    "ENTRY_SIZE",
    "INDEX_PREFIX",
    "MAX_SEGMENT_BYTES",
    "PACK_SIZE",
    "Segment",
    "fanout_bits",
    "key_of",
    "make_segment",
    "parse_segment",
]
