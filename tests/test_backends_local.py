"""The local backend passes the conformance suite, in pack mode and in loose mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from castate.backends import Backend, LocalBackend
from tests.backend_conformance import PersistentBackendConformance


class TestLocalPacked(PersistentBackendConformance):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    async def make_backend(self) -> Backend:
        return LocalBackend(self.path)

    async def reopen(self, backend: Backend) -> Backend:
        return LocalBackend(self.path)


class TestLocalLoose(TestLocalPacked):
    async def make_backend(self) -> Backend:
        return LocalBackend(self.path, loose=True)

    async def reopen(self, backend: Backend) -> Backend:
        return LocalBackend(self.path, loose=True)


class TestLocalRelaxed(TestLocalPacked):
    async def make_backend(self) -> Backend:
        return LocalBackend(self.path, durability="relaxed")


async def test_saves_wait_while_gc_deletes(tmp_path: Path) -> None:
    import asyncio

    from castate.backends import RefUpdate
    from tests.backend_conformance import cid, obj

    gc_side, writer = LocalBackend(tmp_path), LocalBackend(tmp_path)
    await gc_side.open()
    await writer.open()
    try:
        async with gc_side.gc_exclusive():
            save = asyncio.create_task(writer.commit([obj("x")], [RefUpdate("sessions/w", cid(1), None)]))
            await asyncio.sleep(0.3)
            assert not save.done()
        assert await asyncio.wait_for(save, 10) == 1
        assert await gc_side.get_ref("sessions/w") == cid(1)
    finally:
        await gc_side.close()
        await writer.close()
