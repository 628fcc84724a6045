"""Index segments: immutable blobs that say where objects are, so opening a store reads a few
segments instead of every pack's head, and holds about 40 bytes per object instead of Python
objects.

A segment covers a set of packs completely: their heads (the pack table, sorted by name) and
every object they hold (the entries, sorted by id, with a fanout table over the ids' leading
bits so a lookup is two integer reads and one bounded search). Writers make version 3: an
entry names its pack by its row in the table, and the row number and the frame's place take
as few bytes as the segment's packs need (37 bytes an entry for a save of small objects, 40
for a whole store's segment), and a pack row keeps only what readers use (100 bytes).
Version 2, written until then, is still read: 48-byte entries naming their pack by the first
8 bytes of its name, 120-byte rows. Lookups answer with that 8-byte key in both versions.
Pack rows are parsed only when a lookup or a chain needs them. Each save commits a segment
for its packs; writers merge segments as they go (a merge renumbers the rows), and gc writes
one segment covering everything it kept. docs/format.md §6.2 fixes every byte.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import blake3

from castate.errors import CorruptFileError, UnsupportedFormatError
from castate.repository.packs.format import MAX_RAW, MAX_SEQ, READ_CHAIN_MAX, PackInfo

INDEX_PREFIX = "index/"
SEGMENT_MAGIC = b"CASTIDX2"
SEGMENT_VERSION = 3  # what writers make
READ_VERSIONS = (2, 3)
MAX_SEGMENT_BYTES = 1 << 30  # a listed segment larger than this is refused before it is read
THREADED_HASH = 4 << 20

# magic, version, fanout bits, row width, place width (version 3; zero in version 2), n_packs, n_entries
_HEAD = struct.Struct("<8sBBBBII16x")
HEAD_SIZE = _HEAD.size  # 36
# version 2: name, chain, seq, raw_len, chain_raw, prev, time_ns, body_off, body_len, size
_PACK_V2 = struct.Struct("<32s16sIIQ32sQIIQ")
PACK_SIZE_V2 = _PACK_V2.size  # 120
_ENTRY_V2 = struct.Struct("<32s8sII")  # id, pack key (first 8 bytes of its name), offset, length
ENTRY_SIZE_V2 = _ENTRY_V2.size  # 48
# version 3: name, chain, seq, raw_len, chain_raw, prev, body_off, body_len (the blob's size is
# body_off + body_len; a pack's time is the backend's, never the writer's, so it is not kept)
_PACK = struct.Struct("<32s16sIII32sII")
PACK_SIZE = _PACK.size  # 100
# version 3 entries: id, row (row width bytes), offset and length (place width bytes each)
PACK_SIZE_OF = {2: PACK_SIZE_V2, 3: PACK_SIZE}
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


def _widths(n_packs: int, span: int) -> tuple[int, int]:
    """Version 3's row width (bytes that number ``n_packs`` rows) and place width (bytes that
    hold every offset and length up to ``span``)."""
    row = 1
    while n_packs > 1 << (8 * row):
        row += 1
    place = 2
    while span >= 1 << (8 * place):
        place += 1
    return row, place


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
    version: int = SEGMENT_VERSION
    row_width: int = 0  # version 3: bytes of an entry's row number
    place_width: int = 0  # version 3: bytes of an entry's offset, and of its length
    _keys: dict[bytes, int] | None = None  # pack key -> row
    _rows: dict[int, PackInfo | None] = field(default_factory=dict)  # row -> parsed (None: refused)
    _chains: dict[bytes, list[int]] | None = None  # chain id -> rows
    refused: dict[str, str] = field(default_factory=dict)  # pack name -> why its row was refused

    @property
    def blob(self) -> str:
        return INDEX_PREFIX + self.name

    @property
    def row_size(self) -> int:
        return PACK_SIZE_OF[self.version]

    @property
    def entry_size(self) -> int:
        return ENTRY_SIZE_V2 if self.version == 2 else 32 + self.row_width + 2 * self.place_width

    def _key_of_row(self, row: int) -> bytes:
        """The 8-byte key of a row (empty past the table: it names no pack)."""
        if row >= self.n_packs:
            return b""
        at = HEAD_SIZE + row * self.row_size
        return self.data[at : at + 8]

    def _place(self, at: int) -> tuple[bytes, int, int]:
        """(pack key, offset, length) of the entry at byte ``at``."""
        data = self.data
        if self.version == 2:
            return data[at + 32 : at + 40], *_SPAN.unpack_from(data, at + 40)
        rw, pw = self.row_width, self.place_width
        at += 32
        row = int.from_bytes(data[at : at + rw], "little")
        at += rw
        off = int.from_bytes(data[at : at + pw], "little")
        return self._key_of_row(row), off, int.from_bytes(data[at + pw : at + 2 * pw], "little")

    def first(self, oid: bytes) -> tuple[bytes, int, int] | None:
        """(pack key, offset, length) of the first copy of ``oid`` this segment lists, or None."""
        k = int.from_bytes(oid[:4], "big") >> (32 - self.bits)
        lo, hi = _FAN.unpack_from(self.data, self.fanout_at + 4 * k)
        hi = min(hi, self.n_entries)  # a hostile fanout never sends a search past the entries
        if lo >= hi:
            return None
        size = self.entry_size
        at = self.data.find(oid, self.entries_at + lo * size, self.entries_at + hi * size)
        if at < 0:
            return None
        if (at - self.entries_at) % size:
            return next(self.find(oid), None)  # the bytes also appear across entries: look properly
        return self._place(at)

    def find(self, oid: bytes) -> Iterator[tuple[bytes, int, int]]:
        """(pack key, offset, length) of every copy of ``oid`` this segment lists."""
        k = int.from_bytes(oid[:4], "big") >> (32 - self.bits)
        lo, hi = _FAN.unpack_from(self.data, self.fanout_at + 4 * k)
        hi = min(hi, self.n_entries)
        if lo >= hi:
            return
        data, start, size = self.data, self.entries_at, self.entry_size
        end = start + hi * size
        at = data.find(oid, start + lo * size, end)
        while at >= 0:
            if (at - start) % size:
                at = data.find(oid, at + 1, end)
                continue
            yield self._place(at)
            at += size
            if at >= end or data[at : at + 32] != oid:
                return

    def entries(self) -> Iterator[tuple[bytes, bytes, int, int]]:
        """Every (id, pack key, offset, length), in id order."""
        if self.version == 2:
            view = memoryview(self.data)[self.entries_at : self.entries_at + self.n_entries * ENTRY_SIZE_V2]
            return _ENTRY_V2.iter_unpack(view)
        return self._entries_v3()

    def _entries_v3(self) -> Iterator[tuple[bytes, bytes, int, int]]:
        data, rw, pw = self.data, self.row_width, self.place_width
        keys = [self._key_of_row(r) for r in range(self.n_packs)]
        size = self.entry_size
        for at in range(self.entries_at, self.entries_at + self.n_entries * size, size):
            row = int.from_bytes(data[at + 32 : at + 32 + rw], "little")
            p = at + 32 + rw
            yield (
                data[at : at + 32],
                keys[row] if row < len(keys) else b"",
                int.from_bytes(data[p : p + pw], "little"),
                int.from_bytes(data[p + pw : p + 2 * pw], "little"),
            )

    def row_of(self, key: bytes) -> int | None:
        if self._keys is None:
            size = self.row_size
            table = memoryview(self.data)[HEAD_SIZE : HEAD_SIZE + self.n_packs * size]
            self._keys = {bytes(table[r * size : r * size + 8]): r for r in range(self.n_packs)}
        return self._keys.get(key)

    def pack_at(self, row: int) -> PackInfo | None:
        """The pack in ``row``, parsed and checked as a pack head is (None if refused)."""
        if row in self._rows:
            return self._rows[row]
        at = HEAD_SIZE + row * self.row_size
        if self.version == 2:
            pname, chain, seq, raw_len, chain_raw, prev, time_ns, body_off, body_len, size = _PACK_V2.unpack_from(
                self.data, at
            )
        else:
            pname, chain, seq, raw_len, chain_raw, prev, body_off, body_len = _PACK.unpack_from(self.data, at)
            time_ns, size = 0, body_off + body_len
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
            data, size = self.data, self.row_size
            for row in range(self.n_packs):
                at = HEAD_SIZE + row * size + 32
                chains.setdefault(data[at : at + 16], []).append(row)
            self._chains = chains
        return self._chains.get(chain_id, [])

    def check(self) -> list[str]:
        """What lookups would not notice (fsck reads it): entries out of id order, so lookups
        miss objects; a fanout that does not count them; two packs sharing a key; entries that
        name no pack of the table or lie outside their pack."""
        problems: list[str] = []
        keys = [self._key_of_row(r) for r in range(self.n_packs)]
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

    def pack_names(self) -> list[str]:
        data, size = self.data, self.row_size
        return [data[HEAD_SIZE + r * size : HEAD_SIZE + r * size + 32].hex() for r in range(self.n_packs)]


def parse_segment(name: str, data: bytes) -> Segment:
    """A segment from its bytes, checked: its name is their blake3 and its tables fit its size.
    Pack rows are checked when first used, entries when a lookup uses them."""
    where = INDEX_PREFIX + name
    if _hash(data) != name:
        raise CorruptFileError(where, "index segment bytes do not match its name")
    if len(data) < HEAD_SIZE:
        raise CorruptFileError(where, "index segment shorter than its head")
    magic, version, bits, row_width, place_width, n_packs, n_entries = _HEAD.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptFileError(where, "not a castate index segment (bad magic)")
    if version not in READ_VERSIONS:
        if version > SEGMENT_VERSION:
            raise UnsupportedFormatError(f"{where} has version {version}; this castate reads up to {SEGMENT_VERSION}")
        raise CorruptFileError(where, f"unknown index segment version {version}")
    if version == 2:
        if row_width or place_width:
            raise CorruptFileError(where, "index segment head has bytes set that must be zero")
        entry_size = ENTRY_SIZE_V2
    else:
        if not (1 <= row_width <= 4 and 2 <= place_width <= 4):
            raise CorruptFileError(where, f"index segment widths {row_width} and {place_width} out of range")
        entry_size = 32 + row_width + 2 * place_width
    entries_at = HEAD_SIZE + n_packs * PACK_SIZE_OF[version]
    fanout_at = entries_at + n_entries * entry_size
    if bits > 20 or fanout_at + 4 * ((1 << bits) + 1) != len(data):
        raise CorruptFileError(where, "index segment tables do not fit its size")
    first, last = _FAN.unpack_from(data, fanout_at)[0], struct.unpack_from("<I", data, len(data) - 4)[0]
    if first != 0 or last != n_entries:
        raise CorruptFileError(where, "index segment fanout does not cover its entries")
    return Segment(name, data, n_packs, n_entries, bits, entries_at, fanout_at, version, row_width, place_width)


def _merged_records(
    segment: Segment,
    row_names: list[bytes | None],
    table: dict[bytes, _Row],
    number: dict[bytes, bytes],
    pack_place: Callable[[int, int], bytes],
) -> Iterator[bytes]:
    """The entries of a merged segment, re-encoded for the new one (its row numbers, its
    widths), without those that name no usable row or lie outside their pack."""
    fields: list[bytes | None] = []
    spans: list[int] = []
    for name in row_names:
        fields.append(None if name is None else number[name])
        spans.append(-1 if name is None else table[name][2])
    if segment.version == 2:
        for oid, key, off, length in segment.entries():
            row = segment.row_of(key)
            if row is not None and fields[row] is not None and length >= 3 and off + length <= spans[row]:
                yield oid + fields[row] + pack_place(off, length)  # type: ignore[operator]
        return
    data, size, rw, pw = segment.data, segment.entry_size, segment.row_width, segment.place_width
    n = len(fields)
    frm = int.from_bytes
    for at in range(segment.entries_at, segment.entries_at + segment.n_entries * size, size):
        p = at + 32 + rw
        row = frm(data[at + 32 : p], "little")
        if row >= n or fields[row] is None:
            continue
        off, length = frm(data[p : p + pw], "little"), frm(data[p + pw : p + 2 * pw], "little")
        if length >= 3 and off + length <= spans[row]:
            yield data[at : at + 32] + fields[row] + pack_place(off, length)  # type: ignore[operator]


_Row = tuple[bytes, int, int, int, bytes, int, int]  # chain, seq, raw_len, chain_raw, prev, body_off, body_len


def make_segment(
    packs: Iterable[tuple[PackInfo, Iterable[tuple[bytes, int, int]]]],
    segments: Iterable[Segment] = (),
    *,
    version: int = SEGMENT_VERSION,
) -> tuple[str, bytes]:
    """Name and bytes of a segment covering ``packs``, each with its (id, offset, length)
    entries, and what ``segments`` cover (a merge). A pack or an entry given twice is written
    once. Of the merged segments, rows refused as no pack head could have them, and entries
    that name no usable row or lie outside their pack, are left out: lookups never used them,
    and a pack no segment lists is found by listing the packs. ``version`` 2 is what castate
    wrote before version 3 (tests make stores of it)."""
    table: dict[bytes, _Row] = {}
    merged: list[tuple[Segment, list[bytes | None]]] = []  # each segment, with its rows' names (None: refused)
    for segment in segments:
        row_names: list[bytes | None] = []
        for row in range(segment.n_packs):
            p = segment.pack_at(row)
            if p is None:
                row_names.append(None)
                continue
            name = bytes.fromhex(p.name)
            table.setdefault(name, (p.chain, p.seq, p.raw_len, p.chain_raw, p.prev, p.body_off, p.body_len))
            row_names.append(name)
        merged.append((segment, row_names))
    own = [(bytes.fromhex(p.name), p, list(e)) for p, e in packs]
    for name, p, _ in own:
        table[name] = (p.chain, p.seq, p.raw_len, p.chain_raw, p.prev, p.body_off, p.body_len)
    names = sorted(table)
    pack_place: Callable[[int, int], bytes]
    if version == 2:
        row_width = place_width = 0
        rows = [_PACK_V2.pack(n, *table[n][:5], 0, *table[n][5:], table[n][5] + table[n][6]) for n in names]
        number = {n: n[:8] for n in names}  # entries name their pack by key
        pack_place = _SPAN.pack
    else:
        row_width, place_width = _widths(len(names), max((table[n][2] for n in names), default=0))
        rows = [_PACK.pack(n, *table[n]) for n in names]
        number = {n: i.to_bytes(row_width, "little") for i, n in enumerate(names)}
        pw = place_width

        def pack_place(off: int, length: int) -> bytes:
            return off.to_bytes(pw, "little") + length.to_bytes(pw, "little")

    records: set[bytes] = set()
    for segment, row_names in merged:
        records.update(_merged_records(segment, row_names, table, number, pack_place))
    for name, _, entries in own:
        field_ = number[name]
        records.update(oid + field_ + pack_place(off, length) for oid, off, length in entries)
    ordered = sorted(records)
    bits = fanout_bits(len(ordered))
    fan = [0] * ((1 << bits) + 1)
    joined = b"".join(ordered)
    if ordered:
        size = len(ordered[0])
        counts = Counter(k >> (32 - bits) for (k,) in struct.iter_unpack(f">I{size - 4}x", joined))
        for k, c in counts.items():
            fan[k + 1] = c
        for k in range(1, len(fan)):
            fan[k] += fan[k - 1]
    parts = [
        _HEAD.pack(SEGMENT_MAGIC, version, bits, row_width, place_width, len(names), len(ordered)),
        *rows,
        joined,
        struct.pack(f"<{len(fan)}I", *fan),
    ]
    data = b"".join(parts)
    return _hash(data), data


def key_of(name: str) -> bytes:
    """The 8 bytes by which lookups name a pack (version-2 entries hold them)."""
    return bytes.fromhex(name[:16])


__all__ = [
    "INDEX_PREFIX",
    "MAX_SEGMENT_BYTES",
    "PACK_SIZE",
    "SEGMENT_VERSION",
    "Segment",
    "fanout_bits",
    "key_of",
    "make_segment",
    "parse_segment",
]
