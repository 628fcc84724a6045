"""The interface every benchmarked system implements, and disk accounting shared by all."""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any


def walk_disk(root: Path) -> dict[str, int]:
    """Files under ``root`` and their sizes: apparent (st_size) and allocated (st_blocks * 512)."""
    files = apparent = allocated = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"files": files, "bytes_apparent": apparent, "bytes_allocated": allocated}


class System(abc.ABC):
    """One storage system under test, driven by ``tools.bench.run`` in its own process.

    ``checkpoint`` must leave the state durable (as far as the system's mode promises)
    and restorable by the returned handle before it returns; the harness times exactly
    that call. ``restore`` returns the state as a fresh dict.
    """

    name: str = ""
    durable: bool = True
    #: Whether the workload's state should be turned into castate tracked containers first.
    tracked: bool = False

    def __init__(self) -> None:
        self.root: Path | None = None

    async def setup(self, directory: Path) -> None:
        """Create the store in ``directory`` (empty, exclusively this system's)."""
        self.root = directory

    @abc.abstractmethod
    async def checkpoint(self, state: dict[str, Any], step: int) -> Any:
        """Save ``state`` as the step's checkpoint; return a handle for ``restore``."""

    @abc.abstractmethod
    async def restore(self, handle: Any) -> dict[str, Any]:
        """The state saved under ``handle``."""

    async def stats(self) -> dict[str, Any]:
        """System-specific numbers (e.g. object counts), taken before ``close``."""
        return {}

    async def reopen(self) -> None:  # noqa: B027 - optional hook; stateless systems keep the default
        """Drop in-process caches as a new process would start (restores are timed after this)."""

    async def maintain(self) -> None:  # noqa: B027 - optional hook; systems without maintenance keep the default
        """Run the routine maintenance a user would (``--gc``: before the disk is measured)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store; the disk is measured after this."""

    def disk(self) -> dict[str, int]:
        assert self.root is not None
        return walk_disk(self.root)

    def disk_bytes(self) -> tuple[int, int]:
        d = self.disk()
        return d["bytes_apparent"], d["bytes_allocated"]

    def files(self) -> int:
        return self.disk()["files"]
