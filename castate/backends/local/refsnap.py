"""``refs.snapshot``: a cache of the ref journal's replayed refs, so an open replays only the tail.

The journal stays the only truth. A snapshot names the journal generation and the byte
offset it covers, and the hash of the last record it covers; a reader uses it only when all
of those match the journal as it is, and the whole file passes its blake3 check. Anything
else (missing, torn, damaged, another generation, an offset past the end or not at the
record it names) is ignored and the journal is replayed in full. See docs/format.md 3.3.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3

from castate.backends.local.files import atomic_write

MAGIC = b"CASTSNAP"
VERSION = 1
_HEAD = struct.Struct(
    "<8sB7x16sQQQQ32sII"
)  # magic, version, generation, offset, last_start, seq, count, last hash, n, names_len
MAX_SIZE = 1 << 30


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: bytes  # the journal generation (header bytes 16-32) it was taken from
    offset: int  # journal bytes covered: the end of the last record replayed
    last_start: int  # where that last record starts
    seq: int  # its sequence number
    count: int  # records replayed
    last_hash: bytes  # blake3 of the last record's bytes (start to offset)
    refs: dict[str, bytes]


def encode(snap: Snapshot) -> bytes | None:
    """The file's bytes; None when a ref name cannot be stored (never for names castate writes)."""
    names = list(snap.refs)
    if any("\n" in n or not n.isascii() for n in names):
        return None
    blob = "\n".join(names).encode("ascii")
    head = _HEAD.pack(
        MAGIC,
        VERSION,
        snap.generation,
        snap.offset,
        snap.last_start,
        snap.seq,
        snap.count,
        snap.last_hash,
        len(names),
        len(blob),
    )
    body = b"".join((head, blob, *snap.refs.values()))
    return body + blake3.blake3(body).digest()


def decode(data: bytes) -> Snapshot | None:
    """The snapshot in ``data``, or None if it is not a whole, intact one of a version this reads."""
    if len(data) < _HEAD.size + 32:
        return None
    body = memoryview(data)[:-32]
    if blake3.blake3(body).digest() != data[-32:]:
        return None
    magic, version, generation, offset, last_start, seq, count, last_hash, n, names_len = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or _HEAD.size + names_len + 32 * n != len(body):
        return None
    try:
        text = data[_HEAD.size : _HEAD.size + names_len].decode("ascii")
    except UnicodeDecodeError:
        return None
    names = text.split("\n") if n else []
    if len(names) != n or last_start >= offset:
        return None
    start = _HEAD.size + names_len
    ids = [data[i : i + 32] for i in range(start, start + 32 * n, 32)]
    refs = dict(zip(names, ids, strict=True))
    if len(refs) != n:
        return None
    return Snapshot(generation, offset, last_start, seq, count, last_hash, refs)


def load(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, or None when there is none or it cannot be used."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_SIZE:
                return None
            data = f.read()
    except OSError:
        return None
    return decode(data)


def write(path: Path, snap: Snapshot) -> bool:
    """Replace the snapshot (temporary file and rename, no fsync: it is only a cache)."""
    data = encode(snap)
    if data is None:
        return False
    atomic_write(path, data, durable=False, point="snapshot-before-rename")
    return True
