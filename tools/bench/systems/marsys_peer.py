"""MARSYS 0.2.1: its own StateManager over its own FileStorageBackend (JSON files, no fsync).

MARSYS's ``save_session`` keeps only its own schema keys, so the workload state goes where
MARSYS keeps arbitrary content: the snapshot's ``metadata``. A checkpoint is MARSYS's own
``create_checkpoint`` (a full copy of the session file). Its ids have second resolution,
so each step uses its own checkpoint name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tools.bench.systems.base import System

SESSION = "bench"


class Marsys(System):
    name = "marsys"
    durable = False  # MARSYS writes with json.dump and never fsyncs

    def __init__(self) -> None:
        super().__init__()
        self.sm: Any = None

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        logging.getLogger("marsys").setLevel(logging.ERROR)
        from marsys.coordination.state import FileStorageBackend, StateManager

        self.sm = StateManager(FileStorageBackend(directory))

    async def checkpoint(self, state: dict[str, Any], step: int) -> str:
        await self.sm.save_session(SESSION, {"metadata": state})
        return await self.sm.create_checkpoint(SESSION, f"step-{step:06d}")

    async def restore(self, handle: str) -> dict[str, Any]:
        raw = await self.sm.restore_checkpoint(handle)
        state = dict(raw["metadata"])
        state.pop("checkpoint_name", None)
        state.pop("checkpoint_time", None)
        return state

    async def close(self) -> None:
        self.sm = None
