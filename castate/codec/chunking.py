"""Where to cut: content-defined chunks of large values and content-defined runs of entries.

Both are pure functions of the content, so equal values split the same way in every
process and an edit moves only the cuts near it.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyfastcdc import FastCDC

# Large str/bytes values: FastCDC 2020 (pyfastcdc), 2 KiB min, 8 KiB average, 32 KiB max.
CHUNK_AVG = 8192
_cdc = FastCDC(CHUNK_AVG)

# Runs of entries inside a long list, dict or index: cut where an entry's hash falls under
# a threshold proportional to its weight, so runs average about RUN_AVG weight units
# (node bytes), never end below RUN_MIN and always end by RUN_MAX.
RUN_MIN = 512
RUN_AVG = 2048
RUN_MAX = 8192
_SCALE = (1 << 32) // RUN_AVG


def chunk_spans(data: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(offset, length) of each content-defined chunk of ``data``."""
    for c in _cdc.cut_buf(data):
        yield c.offset, c.length


def is_boundary(hash32: int, weight: int, run_weight: int) -> bool:
    """Whether a run ends after an entry; ``run_weight`` already includes the entry."""
    if run_weight >= RUN_MAX:
        return True
    return run_weight >= RUN_MIN and hash32 < weight * _SCALE


def cut(hashes: list[int], weights: list[int], start_weight: int = 0) -> tuple[list[int], int]:
    """End offsets (exclusive) of runs closed by a boundary, and the weight of the open remainder.

    ``start_weight`` is the weight already in the run the first entry joins.
    """
    ends: list[int] = []
    w = start_weight
    for i, (h, wt) in enumerate(zip(hashes, weights, strict=True)):
        w += wt
        if w >= RUN_MAX or (w >= RUN_MIN and h < wt * _SCALE):
            ends.append(i + 1)
            w = 0
    return ends, w
