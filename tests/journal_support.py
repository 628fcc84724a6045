"""Test helpers for the local ref journal's bytes."""

from __future__ import annotations

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
