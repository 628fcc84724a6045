"""Small helpers the benchmark scripts share."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from castate.backends import LocalBackend
from castate.repository.packs import PackStore


class CountingLocal(PackStore):
    """A local store (the pack store over the directory's blobs, as a Repository makes it)
    that counts the objects it was asked to read."""

    reads = 0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(LocalBackend(path))

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, Any]:
        self.reads += len(ids)
        return await super().get_objects(ids)


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """Await ``fn()``; its result and the seconds it took."""
    t0 = time.perf_counter()
    out = await fn()
    return out, time.perf_counter() - t0
