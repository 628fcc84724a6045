"""Naive full copies: every checkpoint is the whole state, orjson + zstd level 3, in a new file.

Durable mode writes ``step-N.json.zst`` with O_EXCL, fsyncs the file and then the
directory (so the new name survives a crash), as any store that promises a durable
checkpoint must. The nofsync mode only writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import zstandard

from tools.bench.systems.base import System

LEVEL = 3


class Naive(System):
    def __init__(self, durable: bool = True) -> None:
        super().__init__()
        self.durable = durable
        self.name = "naive" if durable else "naive-nofsync"
        self._zc = zstandard.ZstdCompressor(level=LEVEL)
        self._zd = zstandard.ZstdDecompressor()
        self._dir_fd: int | None = None

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)

    async def checkpoint(self, state: dict[str, Any], step: int) -> Path:
        assert self.root is not None
        data = self._zc.compress(orjson.dumps(state))
        path = self.root / f"step-{step}.json.zst"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.durable:
            assert self._dir_fd is not None
            os.fsync(self._dir_fd)
        return path

    async def restore(self, handle: Path) -> dict[str, Any]:
        with open(handle, "rb") as f:
            return orjson.loads(self._zd.decompress(f.read()))

    async def stats(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


class NaiveNoFsync(Naive):
    def __init__(self) -> None:
        super().__init__(durable=False)
