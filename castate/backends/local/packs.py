"""Format-1 pack files (read by ``castate upgrade``): many objects per file, compressed together.

Format 1's local store wrote them; format 2 keeps objects in the repository's packs. Each
save appended one *record*: a table of the objects it holds (id, offset, length) and their
frames, zstd-compressed as the continuation of a *chain* (one zstd stream over successive
records of one session). Records are framed by magic, lengths and CRCs; a torn last
record is ignored. This module reads them with bounds against hostile records (sizes are
checked before anything is decompressed). See docs/format.md §3.4 for the bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from castate.backends.local.files import open_regular
from castate.codec.zstdlimits import (  # noqa: F401 - OVERSHOOT and output_bound: part of this module's face
    MAX_WINDOW,
    OVERSHOOT,
    bounded_decompress,
    decompressor,
    output_bound,
)
from castate.errors import CorruptFileError, UnsupportedFormatError

PACK_MAGIC = b"CASTPACK"
PACK_VERSION = 1
PACK_HEADER = PACK_MAGIC + bytes((PACK_VERSION,)) + bytes(7)
REC_MAGIC = b"CREC"
FLAG_CHAIN_START = 1

CHAIN_MAX_RAW = 4 << 20  # frame bytes per chain: bounds read amplification
RECORD_MAX_RAW = 16 << 20  # a writer splits a save with more new bytes into several records
# What a reader accepts: a record declaring more raw bytes, or a chain whose records together do
# (a chain's records stay decompressed while it is read), is damage, refused before decompressing.
READ_RECORD_MAX = 4 * RECORD_MAX_RAW
READ_CHAIN_MAX = 2 * CHAIN_MAX_RAW + READ_RECORD_MAX
ZSTD_LEVEL = 3

_REC_START = struct.Struct("<4sI")  # magic, head length
_HEAD = struct.Struct("<BQQIII")  # flags, time_ns, previous record of the chain, raw_len, comp_len, n
_ENTRY = struct.Struct("<32sII")  # id, offset in the record's raw bytes, length
_U32 = struct.Struct("<I")
_LOC = struct.Struct("<QII")  # an object's place: record offset, offset and length in the record's raw bytes
MAX_HEAD = 64 << 20


@dataclass(slots=True)
class RecInfo:
    offset: int
    chain: int  # offset of the record that starts its chain
    time_ns: int
    raw_len: int
    comp_start: int
    comp_len: int


@dataclass(slots=True, eq=False)
class Pack:
    """What a reader knows of one pack file."""

    path: Path
    records: dict[int, RecInfo] = field(default_factory=dict)
    chains: dict[int, list[int]] = field(default_factory=dict)  # chain start -> its record offsets
    chain_raw: dict[int, int] = field(default_factory=dict)  # chain start -> raw bytes of its records
    entries: dict[bytes, bytes] = field(default_factory=dict)  # id -> its place, as pack_loc() makes it
    scanned: int = len(PACK_HEADER)
    torn: bool = False
    damaged: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of unreadable spans
    end: int | None = None  # bytes past this are not read (a record this process failed to make durable)
    fd: int | None = None
    indexed: int = 0  # objects the newest packs/<name>.idx known here lists

    @property
    def name(self) -> str:
        return self.path.name

    def file(self) -> int:
        if self.fd is None:
            self.fd = open_regular(self.path)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def pack_loc(rec_off: int, off: int, n: int) -> bytes:
    """An object's place in a pack (its record's file offset, its offset and length in the
    record's raw bytes) as 16 bytes: a third of the memory of a tuple, for every object listed,
    and the very bytes a pack index stores, so loading one makes no per-object Python call."""
    return _LOC.pack(rec_off, off, n)


def unpack_loc(loc: bytes) -> tuple[int, int, int]:
    """(record offset, offset, length) from ``pack_loc``."""
    rec_off, off, n = _LOC.unpack(loc)
    return int(rec_off), int(off), int(n)


# -- the bytes a format-1 writer appended (tests build old and hostile packs with it) -------


def encode_record(items: Sequence[tuple[bytes, bytes]], comp: bytes, raw_len: int, prev: int, time_ns: int) -> bytes:
    """One record: start, head (with the object table), head CRC, compressed frames, data CRC."""
    entries = []
    off = 0
    for oid, frame in items:
        entries.append(_ENTRY.pack(oid, off, len(frame)))
        off += len(frame)
    flags = 0 if prev else FLAG_CHAIN_START
    head = _HEAD.pack(flags, time_ns, prev, raw_len, len(comp), len(items)) + b"".join(entries)
    return b"".join(
        (
            _REC_START.pack(REC_MAGIC, len(head)),
            head,
            _U32.pack(zlib.crc32(head)),
            comp,
            _U32.pack(zlib.crc32(comp)),
        )
    )


# -- reading ---------------------------------------------------------------------------------


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def scan_pack(pack: Pack) -> list[bytes]:
    """Read the record tables appended since the last scan into ``pack``; returns new ids.

    Stops quietly at a torn or unfinished record at the end of the file. A damaged record
    followed by good ones is skipped and listed in ``pack.damaged``.
    """
    fd = pack.file()
    size = os.fstat(fd).st_size
    if pack.end is not None:
        size = min(size, pack.end)
    if pack.scanned == len(PACK_HEADER) and not pack.records:
        header = _pread(fd, len(PACK_HEADER), 0)
        if len(header) < len(PACK_HEADER):
            pack.torn = True
            return []
        if header[:8] != PACK_MAGIC:
            raise CorruptFileError(str(pack.path), "bad pack header")
        if header[8] > PACK_VERSION:
            raise UnsupportedFormatError(f"{pack.path} has pack version {header[8]}; this castate reads {PACK_VERSION}")
    new: list[bytes] = []
    off = pack.scanned
    window = _Window(fd, size)
    entries_of = pack.entries
    while off < size:
        rec = _read_head(fd, off, size, window)
        if rec is None:
            nxt = _next_good_record(fd, off + 1, size)
            if nxt is None:
                pack.torn = True  # an unfinished or torn last record: not (yet) data
                break
            pack.damaged.append((off, nxt))  # bit rot or tampering: skip it, report it
            off = nxt
            continue
        flags, prev, info, entries, end = rec
        if info.raw_len > READ_RECORD_MAX:
            pack.damaged.append((off, end))  # more than any writer makes: never decompressed
            off = end
            continue
        if flags & FLAG_CHAIN_START:
            info.chain = off
            pack.chains[off] = [off]
            pack.chain_raw[off] = info.raw_len
        else:
            before = pack.records.get(prev)
            if (
                before is not None
                and before.chain >= 0
                and pack.chains[before.chain][-1] == prev
                and pack.chain_raw[before.chain] + info.raw_len <= READ_CHAIN_MAX
            ):
                info.chain = before.chain
                pack.chains[info.chain].append(off)
                pack.chain_raw[info.chain] += info.raw_len
            else:
                info.chain = -1  # its chain is broken by damage (or too long): its objects cannot be read
        pack.records[off] = info
        raw_len = info.raw_len
        loc = _LOC.pack
        for oid, o, n in entries:
            if o + n <= raw_len and oid not in entries_of:
                entries_of[oid] = loc(off, o, n)
                new.append(oid)
        off = end
    pack.scanned = off
    return new


class _Window:
    """Bytes of a pack read ahead in large blocks, so a scan makes one read per block instead of
    two per record (record heads are small and lie between small compressed payloads)."""

    BLOCK = 1 << 20

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.start = 0
        self.buf = b""

    def read(self, offset: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``offset`` (fewer at the end of the file)."""
        if not (self.start <= offset and offset + n <= self.start + len(self.buf)):
            if n > self.BLOCK:
                return _pread(self.fd, n, offset)
            self.start = offset
            self.buf = _pread(self.fd, min(self.BLOCK, max(self.size - offset, n)), offset)
        pos = offset - self.start
        return memoryview(self.buf)[pos : pos + n]


def _read_head(
    fd: int, off: int, size: int, window: _Window | None = None
) -> tuple[int, int, RecInfo, list[tuple[bytes, int, int]], int] | None:
    read = window.read if window is not None else lambda o, n: _pread(fd, n, o)
    start = read(off, _REC_START.size)
    if len(start) < _REC_START.size:
        return None
    magic, head_len = _REC_START.unpack(start)
    head_off = off + _REC_START.size
    if magic != REC_MAGIC or not _HEAD.size <= head_len <= MAX_HEAD or head_off + head_len + 4 > size:
        return None
    blob = read(head_off, head_len + 4)
    head = blob[:head_len]
    if len(blob) < head_len + 4 or _U32.unpack_from(blob, head_len)[0] != zlib.crc32(head):
        return None
    flags, t, prev, raw_len, comp_len, n = _HEAD.unpack_from(head, 0)
    if _HEAD.size + n * _ENTRY.size != head_len:
        return None
    comp_start = head_off + head_len + 4
    end = comp_start + comp_len + 4
    if end > size:
        return None
    if end + _REC_START.size > size:
        # The last record of a file may be torn inside its data: check the data CRC now.
        data = _pread(fd, comp_len + 4, comp_start)
        if _U32.unpack_from(data, comp_len)[0] != zlib.crc32(memoryview(data)[:comp_len]):
            return None
    entries = list(_ENTRY.iter_unpack(head[_HEAD.size :]))
    return flags, prev, RecInfo(off, -1, t, raw_len, comp_start, comp_len), entries, end


def _next_good_record(fd: int, off: int, size: int) -> int | None:
    """Offset of the first intact record at or after ``off`` (found by its magic), if any."""
    while off < size:
        window = _pread(fd, min(size - off, 1 << 22), off)
        pos = 0
        while True:
            pos = window.find(REC_MAGIC, pos)
            if pos < 0:
                break
            if _read_head(fd, off + pos, size) is not None:
                return off + pos
            pos += 1
        off += max(len(window) - len(REC_MAGIC), 1)
    return None


@dataclass(slots=True)
class _Decoded:
    dobj: Any  # the chain's decompressor, past its last decompressed record
    raws: dict[int, bytes]  # record offset -> decompressed bytes
    done: int  # how many records of the chain are decompressed
    size: int = 0


class ChainCache:
    """Decompressed chain prefixes, least recently used dropped first, bounded in bytes."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], _Decoded] = OrderedDict()
        self._bytes = 0

    def record_bytes(self, pack: Pack, rec: RecInfo) -> bytes:
        """The raw (decompressed) bytes of one record."""
        if rec.chain < 0:
            raise CorruptFileError(str(pack.path), f"record at offset {rec.offset} follows a damaged record")
        key = (pack.name, rec.chain)
        item = self._items.get(key)
        if item is None:
            item = _Decoded(decompressor().decompressobj(), {}, 0)
            self._items[key] = item
        self._items.move_to_end(key)
        raw = item.raws.get(rec.offset)
        if raw is not None:
            return raw
        order = pack.chains[rec.chain]
        fd = pack.file()
        while raw is None:
            if item.done >= len(order):
                self._drop(key)
                raise CorruptFileError(str(pack.path), f"record {rec.offset} is not in its chain")
            r = pack.records[order[item.done]]
            data = _pread(fd, r.comp_len + 4, r.comp_start)
            comp = memoryview(data)[: r.comp_len]
            if len(data) < r.comp_len + 4 or _U32.unpack_from(data, r.comp_len)[0] != zlib.crc32(comp):
                self._drop(key)
                raise CorruptFileError(str(pack.path), f"record at offset {r.offset}: data CRC mismatch")
            try:
                out = bounded_decompress(item.dobj, comp, r.raw_len, r.offset == r.chain)
            except zstandard.ZstdError as exc:
                self._drop(key)
                raise CorruptFileError(str(pack.path), f"record at offset {r.offset}: {exc}") from None
            if out is None or len(out) != r.raw_len:
                self._drop(key)
                raise CorruptFileError(str(pack.path), f"record at offset {r.offset} decompressed to a wrong size")
            item.raws[r.offset] = out
            item.size += len(out)
            self._bytes += len(out)
            item.done += 1
            if r.offset == rec.offset:
                raw = out
        self._evict(keep=key)
        return raw

    def _drop(self, key: tuple[str, int]) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item.size

    def _evict(self, keep: tuple[str, int]) -> None:
        for key in list(self._items):
            if self._bytes <= self.max_bytes:
                break
            if key != keep:
                self._drop(key)

    def forget_pack(self, name: str) -> None:
        for key in [k for k in self._items if k[0] == name]:
            self._drop(key)
