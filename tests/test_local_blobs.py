"""The local directory store on the blob contract: the blob suite, the object suite over
PackStore, and what its files promise (volumes, places in the journal, gc giving space back)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from castate.backends import Backend
from castate.backends.blob import BlobBackend
from castate.backends.local import LocalBackend
from castate.testing import PersistentBlobBackendTests
from tests.backend_conformance import PersistentBackendConformance


class TestLocalBlobs(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    async def make_backend(self) -> BlobBackend:
        return LocalBackend(self.path)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return LocalBackend(self.path)


class TestLocalBlobsRelaxed(TestLocalBlobs):
    async def make_backend(self) -> BlobBackend:
        return LocalBackend(self.path, durability="relaxed", volume_size=4096)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return LocalBackend(self.path, durability="relaxed", volume_size=4096)


class TestLocalPacks(PersistentBackendConformance):
    """The object-level suite over PackStore(LocalBackend)."""

    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    async def make_backend(self) -> Backend:
        from castate.repository.packs import PackStore

        return PackStore(LocalBackend(self.path))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        from castate.repository.packs import PackStore

        return PackStore(LocalBackend(self.path, **options))  # type: ignore[arg-type]


async def test_gc_gives_space_back_while_another_writer_keeps_its_store_open(tmp_path: Path) -> None:
    """A long-running writer used to keep its open pack (up to 256 MB) from gc; volumes are shared
    and gc moves their live blobs into a new one, so the space comes back while it runs."""
    import castate

    path = tmp_path / "store"
    big = {"doc": os.urandom(200_000).hex()}
    async with castate.StateManager(castate.LocalBackend(path)) as writer:
        await writer.save_session("keep", {"small": 1})
        for step in range(5):
            await writer.save_session("scratch", {**big, "step": step})
        await writer.delete_session("scratch")
        before = await volume_bytes(path)
        async with castate.StateManager(castate.LocalBackend(path)) as other:
            report = await other.gc(grace=0, reflog_expire=0)
        after = await volume_bytes(path)
        assert after < before / 10, (before, after, report)
        # The writer reads and writes on: its blobs moved under it.
        assert await writer.load_session("keep") == {"small": 1}
        await writer.save_session("keep", {"small": 2})
    async with castate.StateManager(path) as sm:
        assert await sm.load_session("keep") == {"small": 2}
        assert (await sm.fsck(full=True)).ok


async def volume_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path / "volumes").glob("*.vol"))


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


async def test_a_new_store_has_the_format_2_layout_and_refuses_a_newer_volume(tmp_path: Path) -> None:
    import json

    from castate.errors import UnsupportedFormatError

    store = LocalBackend(tmp_path / "s")
    await store.open()
    await store.put_blobs([("packs/" + "ab" * 32, b"payload")])
    await store.close()
    root = tmp_path / "s"
    assert json.loads((root / "castate.json").read_text())["version"] == 2
    assert sorted(p.name for p in root.iterdir()) == ["castate.json", "locks", "refs.journal", "volumes"]
    (volume,) = (root / "volumes").iterdir()
    data = bytearray(volume.read_bytes())
    data[8] = 9
    volume.write_bytes(bytes(data))
    again = LocalBackend(root)
    await again.open()
    try:
        with pytest.raises(UnsupportedFormatError, match="volume version 9"):
            await again.get_blobs(["packs/" + "ab" * 32])
    finally:
        await again.close()


async def test_a_clean_up_drops_the_place_history_and_keeps_refs_reflog_and_blobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deletes rewrite a mostly dead volume without gc; the journal then drops the history of
    blob places (no one reads it), and everything a user sees stays as it was."""
    import castate
    from castate.backends.local import blobs

    monkeypatch.setattr(blobs, "CLEAN_MIN", 0)
    monkeypatch.setattr(blobs, "JOURNAL_MIN", 0)
    path = tmp_path / "store"
    async with castate.StateManager(castate.LocalBackend(path)) as sm:
        for step in range(30):
            await sm.save_session("s", {"step": step, "text": os.urandom(3000).hex()})
            await sm.save_session("scratch", {"step": step, "text": os.urandom(3000).hex()})
            if step % 10 == 0:
                await sm.create_checkpoint("s", f"cp{step}")
        await sm.delete_session("scratch")
        reflog = [(e.old, e.new, e.message) for e in await sm.repository.reflog("sessions/s")]
        refs = await sm.repository.list_refs()
        await sm.gc(grace=0)  # deletes scratch's packs: its volume is mostly dead and is rewritten
    records = journal_records(path)
    assert records[0].kind == 1  # the leading snapshot a drop of the place history writes
    assert sum(1 for r in records for n, _, _ in r.changes if n.startswith("\x00")) < 60 * 2  # not one per save
    async with castate.StateManager(path) as sm:
        assert [(e.old, e.new, e.message) for e in await sm.repository.reflog("sessions/s")] == reflog
        assert {
            k: v for k, v in (await sm.repository.list_refs()).items() if k.startswith(("sessions/", "checkpoints/"))
        } == {k: v for k, v in refs.items() if k.startswith(("sessions/", "checkpoints/"))}
        assert (await sm.load_session("s"))["step"] == 29
        assert (await sm.restore_checkpoint("s@cp0"))["step"] == 0
        assert (await sm.fsck(full=True)).ok


def journal_records(path: Path) -> list:  # type: ignore[type-arg]
    from castate.backends.local import journal

    data = (path / "refs.journal").read_bytes()
    return journal.scan(data, journal.HEADER_SIZE)[0]
