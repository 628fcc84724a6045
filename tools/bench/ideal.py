"""The ideal: the bytes a perfect incremental store would need for a workload.

ideal = len(zstd_3(orjson.dumps(initial state)))
      + sum over steps of len(zstd_3(orjson.dumps(new pieces of that step)))

where the new pieces are what ``Workload.step()`` returns: each step's new messages (a
byte-identical re-fetched tool result counts as a reference, not again), the changed
small fields and the rewritten scratchpad. It is compressed per step, as a store that
writes each checkpoint durably before the next one exists must. The benchmark's target
is disk at most 1.5x this.
"""

from __future__ import annotations

from typing import Any

import orjson
import zstandard

LEVEL = 3


class Ideal:
    """Accumulates the ideal bytes of a workload, step by step."""

    def __init__(self, initial_state: Any) -> None:
        self._zstd = zstandard.ZstdCompressor(level=LEVEL)
        self.initial = self.bytes_of(initial_state)
        self.per_step: list[int] = []
        self.total = self.initial

    def bytes_of(self, pieces: Any) -> int:
        """zstd level 3 size of one step's new pieces, serialized by orjson."""
        return len(self._zstd.compress(orjson.dumps(pieces)))

    def add(self, pieces: list[Any]) -> int:
        n = self.bytes_of(pieces)
        self.per_step.append(n)
        self.total += n
        return n
