"""zstd with limits: decompressing damaged or crafted data never allocates far more than declared.

zstd can expand a few bytes 32,768 times, so every reader of castate's compressed bytes
(pack chains, bundles) goes through these helpers instead of calling zstandard directly.
"""

from __future__ import annotations

from typing import Any

import zstandard

OVERSHOOT = 32 << 20  # how far a reader may decompress past a declared size before it stops
MAX_WINDOW = 8 << 20  # castate writes windows of at most 2 MiB (level 3)


def bounded_decompress(dobj: Any, comp: bytes | memoryview, limit: int, frame_start: bool) -> bytes | None:
    """Feed ``comp`` (whole zstd blocks, after a frame header if ``frame_start``) to the
    decompressor ``dobj`` and return the output, or None once it passes ``limit`` bytes.

    zstd can expand a few bytes 32,768 times (one 4-byte block makes 128 KiB), so damaged or
    crafted data fed whole could make a reader allocate gigabytes. The block headers bound the
    output; when that bound is within ``limit`` plus ``OVERSHOOT`` (castate's own records
    always are) the data goes in whole, else in slices small enough to stop near ``limit``."""
    bound = output_bound(comp, frame_start)
    if bound is not None and bound <= limit + OVERSHOOT:
        out: bytes = dobj.decompress(comp)
        return out if len(out) <= limit else None
    view = memoryview(comp)
    parts = []
    size = 0
    pos = 0
    while pos < len(view):
        step = max(1024, (limit + OVERSHOOT - size) >> 15)
        out = dobj.decompress(view[pos : pos + step])
        pos += step
        size += len(out)
        if size > limit:
            return None
        parts.append(out)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_FCS_BYTES = (0, 2, 4, 8)
_DICT_BYTES = (0, 1, 2, 4)


def output_bound(comp: bytes | memoryview, frame_start: bool) -> int | None:
    """The most bytes zstd blocks can decompress to, read from their headers (RFC 8878);
    None when the bytes are not a sequence of whole blocks."""
    pos = 0
    n = len(comp)
    if frame_start:
        if n < 5 or bytes(comp[:4]) != b"\x28\xb5\x2f\xfd":
            return None
        fhd = comp[4]
        single = fhd >> 5 & 1
        pos = 5 + (0 if single else 1) + _DICT_BYTES[fhd & 3] + (_FCS_BYTES[fhd >> 6] or single)
    bound = 0
    while pos < n:
        if pos + 3 > n:
            return None
        header = comp[pos] | comp[pos + 1] << 8 | comp[pos + 2] << 16
        kind, size = header >> 1 & 3, header >> 3
        if kind == 3:
            return None
        bound += (1 << 17) if kind == 2 else size  # a compressed block makes at most 128 KiB
        pos += 3 + (1 if kind == 1 else size)
    return bound if pos == n else None


def decompressor() -> zstandard.ZstdDecompressor:
    """castate writes windows of at most 2 MiB (level 3); a frame claiming more is refused
    instead of making the reader allocate it."""
    return zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)


__all__ = ["MAX_WINDOW", "OVERSHOOT", "bounded_decompress", "decompressor", "output_bound"]
