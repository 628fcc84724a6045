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

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return LocalBackend(self.path, **options)


class TestLocalLoose(TestLocalPacked):
    async def make_backend(self) -> Backend:
        return LocalBackend(self.path, loose=True)

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return LocalBackend(self.path, loose=True, **options)


class TestLocalRelaxed(TestLocalPacked):
    async def make_backend(self) -> Backend:
        return LocalBackend(self.path, durability="relaxed")


async def test_gc_waits_while_another_backend_holds_gc_shared(tmp_path: Path) -> None:
    import asyncio

    holder, gc_side = LocalBackend(tmp_path), LocalBackend(tmp_path)
    await holder.open()
    await gc_side.open()

    async def exclusive() -> None:
        async with gc_side.gc_exclusive():
            pass

    try:
        async with holder.gc_shared():
            task = asyncio.create_task(exclusive())
            await asyncio.sleep(0.3)
            assert not task.done()
        await asyncio.wait_for(task, 10)
    finally:
        await holder.close()
        await gc_side.close()


async def test_dedup_notices_objects_that_gc_deleted_in_another_backend(tmp_path: Path) -> None:
    """A writer's pack index may still list what gc just deleted; a save must write it again."""
    from castate.backends import RefUpdate
    from tests.backend_conformance import obj

    item = obj("garbage, then needed again")
    first = LocalBackend(tmp_path)
    await first.open()
    await first.put_objects([item])
    await first.close()  # its pack is sealed: gc may rewrite it
    writer, gc_side = LocalBackend(tmp_path), LocalBackend(tmp_path)
    await writer.open()
    await gc_side.open()
    try:
        assert await writer.has_objects([item[0]]) == {item[0]}
        async with gc_side.gc_exclusive():
            assert await gc_side.delete_objects([item[0]]) == 1
        assert await writer.has_objects([item[0]]) == set()
        assert await writer.commit([item], [RefUpdate("sessions/w", item[0], None)]) == 1
        assert bytes((await gc_side.get_objects([item[0]]))[item[0]]) == item[1]
    finally:
        await writer.close()
        await gc_side.close()


async def test_a_gc_that_dies_mid_delete_still_warns_other_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc killed after it removed a pack: another writer's index must not trust that pack.

    It used to tell other backends (locks/gc.generation) only after all its deletions, so a
    gc that died in between left them deduplicating against objects that were gone."""
    from castate.backends import RefUpdate
    from castate.backends.local import osio
    from tests.backend_conformance import obj

    item = obj("garbage, then needed again")
    first = LocalBackend(tmp_path)
    await first.open()
    await first.put_objects([item])
    await first.close()
    writer, gc_side = LocalBackend(tmp_path), LocalBackend(tmp_path)
    await writer.open()
    await gc_side.open()
    real_unlink = osio.unlink

    def unlink_then_die(path: Path) -> None:
        real_unlink(path)
        raise SystemExit("gc killed after removing a pack")

    try:
        assert await writer.has_objects([item[0]]) == {item[0]}
        monkeypatch.setattr(osio, "unlink", unlink_then_die)
        with pytest.raises(SystemExit):
            async with gc_side.gc_exclusive():
                await gc_side.delete_objects([item[0]])
        monkeypatch.setattr(osio, "unlink", real_unlink)
        assert await writer.has_objects([item[0]]) == set()
        await writer.commit([item], [RefUpdate("sessions/w", item[0], None)])
    finally:
        await writer.close()
        await gc_side.close()
    fresh = LocalBackend(tmp_path)
    await fresh.open()
    try:
        assert bytes((await fresh.get_objects([item[0]]))[item[0]]) == item[1]
    finally:
        await fresh.close()
