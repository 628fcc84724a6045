"""``packs/<name>.idx``: a checked cache of what a scan of a pack learns, so an open skips it.

Scanning a pack reads and parses every record head (about 12 us per record and 0.3 us per
object listed: 15 ms at 1,000 saves, 200 ms at 10,000), and every open of a store did it.
The pack file stays the only truth. An index names the pack bytes it covers and the blake3
of the last record it covers, and a reader uses it only when those bytes are still there and
the whole file passes its blake3 check; anything else (missing, torn, damaged, a newer
version, a pack that is shorter or different) is ignored and the pack is scanned from its
start. Bytes past the covered ones are scanned as before. See docs/format.md 3.4.
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
from array import array
from pathlib import Path

import blake3

from castate.backends.local.files import atomic_write
from castate.backends.local.packs import PACK_HEADER, READ_CHAIN_MAX, READ_RECORD_MAX, Pack, RecInfo, _pread

SUFFIX = ".idx"
MAGIC = b"CASTPIDX"
VERSION = 1
# magic, version, covered, last record start, its blake3, records, damaged spans, objects
_HEAD = struct.Struct("<8sB7xQQ32sIII")
# RecInfo's fields: offset, chain start (-1: broken), time_ns, raw_len, comp_start, comp_len
_REC = struct.Struct("<QqQIQI")
_SPAN = struct.Struct("<QQ")
MAX_SIZE = 1 << 30
MIN_NEW = 256  # objects a pack gains past its index before a writer rewrites the index


def path_of(pack_path: Path) -> Path:
    return pack_path.with_name(pack_path.name + SUFFIX)


def last_record(pack: Pack) -> int:
    """Offset of the last record a scan of ``pack`` has taken in (0 when none)."""
    return max(pack.records, default=0)


def encode(pack: Pack, last_hash: bytes) -> bytes:
    """The index file's bytes for what ``pack`` holds now; ``last_hash`` is the blake3 of its
    last record's bytes (from its start to ``pack.scanned``)."""
    records = sorted(pack.records.values(), key=lambda r: r.offset)
    body = b"".join(
        (
            _HEAD.pack(
                MAGIC,
                VERSION,
                pack.scanned,
                last_record(pack),
                last_hash,
                len(records),
                len(pack.damaged),
                len(pack.entries),
            ),
            *(_REC.pack(r.offset, r.chain, r.time_ns, r.raw_len, r.comp_start, r.comp_len) for r in records),
            *(_SPAN.pack(a, b) for a, b in pack.damaged),
            *pack.entries,
            *pack.entries.values(),
        )
    )
    return body + blake3.blake3(body).digest()


def decode_into(pack: Pack, data: bytes) -> bool:
    """Fill an unscanned ``pack`` from index bytes; False (``pack`` untouched) unless they are a
    whole, intact index of a version this reads. The pack file itself is checked by ``load``."""
    if len(data) < _HEAD.size + 32:
        return False
    body = memoryview(data)[:-32]
    if blake3.blake3(body).digest() != data[-32:]:
        return False
    magic, version, covered, last_start, _last_hash, n_rec, n_dmg, n_obj = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        return False
    pos = _HEAD.size
    end_rec = pos + n_rec * _REC.size
    end_dmg = end_rec + n_dmg * _SPAN.size
    end_ids = end_dmg + 32 * n_obj
    if end_ids + 16 * n_obj != len(body) or covered < len(PACK_HEADER) or (n_rec and last_start >= covered):
        return False
    records: dict[int, RecInfo] = {}
    chains: dict[int, list[int]] = {}
    chain_raw: dict[int, int] = {}
    for info in itertools.starmap(RecInfo, _REC.iter_unpack(body[pos:end_rec])):
        off, chain = info.offset, info.chain
        if off in records or not off < info.comp_start <= info.comp_start + info.comp_len <= covered:
            return False
        if info.raw_len > READ_RECORD_MAX:
            return False
        if chain == off:
            chains[off] = [off]
            chain_raw[off] = info.raw_len
        elif chain in chains:
            chains[chain].append(off)
            chain_raw[chain] += info.raw_len
            if chain_raw[chain] > READ_CHAIN_MAX:
                return False
        elif chain != -1:
            return False
        records[off] = info
    if n_rec and last_start not in records:
        return False
    damaged = list(_SPAN.iter_unpack(body[end_rec:end_dmg]))
    # One C call each (struct.Struct, not struct.unpack: its cache would keep the long formats).
    ids = struct.Struct("32s" * n_obj).unpack_from(body, end_dmg)
    locs = struct.Struct("16s" * n_obj).unpack_from(body, end_ids)
    halves = array("Q")
    halves.frombytes(body[end_ids:])
    if sys.byteorder == "big":
        halves.byteswap()
    if not set(halves[0::2]) <= records.keys():  # every object's record offset
        return False
    entries = dict(zip(ids, locs, strict=True))
    if len(entries) != n_obj:
        return False
    pack.records = records
    pack.chains = chains
    pack.chain_raw = chain_raw
    pack.entries = entries
    pack.damaged = damaged
    pack.scanned = covered
    return True


def load(pack: Pack) -> bool:
    """Fill an unscanned ``pack`` from its index when the index is intact and the pack still
    holds the bytes it covers; False (``pack`` untouched: scan it) otherwise."""
    try:
        with open(path_of(pack.path), "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_SIZE:
                return False
            data = f.read()
    except OSError:
        return False
    if len(data) < _HEAD.size:
        return False
    _, _, covered, last_start, last_hash, n_rec, _, _ = _HEAD.unpack_from(data, 0)
    try:
        fd = pack.file()
        if os.fstat(fd).st_size < covered:
            return False
        if n_rec:
            tail = _pread(fd, covered - last_start, last_start)
            if blake3.blake3(tail).digest() != last_hash:
                return False
        elif _pread(fd, len(PACK_HEADER), 0) != PACK_HEADER or covered != len(PACK_HEADER):
            return False
    except (OSError, OverflowError, ValueError):
        return False
    return decode_into(pack, data)


def write(pack: Pack) -> bool:
    """Replace the index of ``pack`` with what it holds now (temporary file and rename, no
    fsync: it is only a cache). False when there is nothing to cover or the write failed."""
    if not pack.records:
        return False
    last = last_record(pack)
    try:
        tail = _pread(pack.file(), pack.scanned - last, last)
        if len(tail) != pack.scanned - last:
            return False
        data = encode(pack, blake3.blake3(tail).digest())
        atomic_write(path_of(pack.path), data, durable=False, point="index-before-rename")
    except OSError:
        return False
    return True
