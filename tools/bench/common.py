"""Small helpers the benchmark scripts share."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from castate.backends import LocalBackend


class CountingLocal(LocalBackend):
    """A local backend that counts the objects it was asked to read."""

    reads = 0

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        self.reads += len(ids)
        return await super().get_objects(ids)


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """Await ``fn()``; its result and the seconds it took."""
    t0 = time.perf_counter()
    out = await fn()
    return out, time.perf_counter() - t0
