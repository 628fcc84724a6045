"""Test helpers for the bytes of a local store's ref journal and volumes."""

from __future__ import annotations

import struct
from pathlib import Path

from castate.backends.local.journal import HEADER_SIZE, _record_at


def record_offsets(path: Path) -> list[int]:
    """Where each record of the (undamaged) journal at ``path`` starts."""
    buf = path.read_bytes()
    offs, off = [], HEADER_SIZE
    while off < len(buf):
        rec = _record_at(buf, off)
        assert rec is not None
        offs.append(off)
        off = rec[1]
    return offs


VOLUME_HEADER_SIZE = 16  # "CASTVOL\0", version, 7 zero bytes (docs/format.md §3.1)
VOLUME_RECORD = struct.Struct("<4sHQ32s")  # "CBLB", name length, data length, blake3 of the data


def volume_records(volume: Path) -> list[tuple[str, int, int]]:
    """(blob name, offset of its data, length) of each record of the volume file, in order."""
    data = volume.read_bytes()
    out, off = [], VOLUME_HEADER_SIZE
    while off < len(data):
        magic, name_len, length, _ = VOLUME_RECORD.unpack_from(data, off)
        assert magic == b"CBLB"
        start = off + VOLUME_RECORD.size + name_len
        out.append((data[off + VOLUME_RECORD.size : start].decode("ascii"), start, length))
        off = start + length
    return out
