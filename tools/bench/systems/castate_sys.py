"""castate: one session saved every step, a named checkpoint (a ref) per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import castate
from tools.bench.systems.base import System

SESSION = "bench"


class CastateSteps(System):
    """The steps every castate system takes, over whichever store ``setup`` opens as ``self.sm``:
    ``save_session`` then a named ``create_checkpoint`` (a ref); restore is ``restore_checkpoint``."""

    def __init__(self) -> None:
        super().__init__()
        self.sm: castate.StateManager | None = None

    async def checkpoint(self, state: dict[str, Any], step: int) -> str:
        assert self.sm is not None
        await self.sm.save_session(SESSION, state)
        return await self.sm.create_checkpoint(SESSION, f"step-{step:06d}")

    async def restore(self, handle: str) -> dict[str, Any]:
        assert self.sm is not None
        return await self.sm.restore_checkpoint(handle)

    async def stats(self) -> dict[str, Any]:
        assert self.sm is not None
        return dict(await self.sm.repository.backend.stats())

    async def maintain(self) -> None:
        """``castate gc`` with its defaults: nothing referenced goes; packs are merged, space reclaimed."""
        assert self.sm is not None
        await self.sm.gc()

    async def close(self) -> None:
        if self.sm is not None:
            await self.sm.close()


class Castate(CastateSteps):
    """castate's StateManager over a FileStorageBackend (durable: fsync; relaxed: none)."""

    def __init__(self, durability: str = "durable") -> None:
        super().__init__()
        self.durability = durability
        self.durable = durability == "durable"
        self.name = "castate" if self.durable else "castate-relaxed"

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        self.sm = castate.StateManager(castate.FileStorageBackend(directory, durability=self.durability))

    async def reopen(self) -> None:
        assert self.sm is not None
        assert self.root is not None
        await self.sm.close()
        self.sm = castate.StateManager(castate.FileStorageBackend(self.root, durability=self.durability))


class CastateRelaxed(Castate):
    def __init__(self) -> None:
        super().__init__("relaxed")


class CastateTracked(Castate):
    """castate with opt-in change tracking: the workload mutates castate.tracked() containers."""

    tracked = True

    def __init__(self) -> None:
        super().__init__("durable")
        self.name = "castate-tracked"
