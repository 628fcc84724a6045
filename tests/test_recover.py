"""Recovering refs: a damaged ref journal is rebuilt, and refs whose data is damaged go back
to their newest intact state in the reflog (castate/repository/recover.py, ``fsck --repair-refs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import CorruptFileError
from castate.repository import refs as names
from tests.journal_support import record_offsets


def state(step: int) -> dict[str, Any]:
    return {"step": step, "notes": f"notes of step {step} " * 300, "items": list(range(step * 100))}


async def fill(path: Path) -> list[str]:
    async with castate.StateManager(path) as sm:
        cps = []
        for step in range(1, 5):
            await sm.save_session("run", state(step))
            cps.append(await sm.create_checkpoint("run", f"step-{step}"))
        await sm.save_session("other", {"other": True})
        return cps


async def test_a_store_with_a_damaged_journal_is_rebuilt_and_opens(tmp_path: Path) -> None:
    path = tmp_path / "store"
    cps = await fill(path)
    journal = path / "refs.journal"
    offs = record_offsets(journal)
    data = bytearray(journal.read_bytes())
    data[offs[1] + 25] ^= 0xFF  # the second record: the first checkpoint's creation
    journal.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="--repair-refs"):
        await castate.StateManager(path).load_session("run")

    sm = castate.StateManager(path)
    try:
        report = await sm.repair_refs()  # on a store that cannot open
        assert report.damaged
        assert report.lost_records == 1
        assert report.maybe_lost == [names.checkpoint_ref(cps[0])]
        assert report.saved_as is not None
        assert Path(report.saved_as).parent == path / "quarantine"
        assert await sm.load_session("run") == state(4)
        assert await sm.load_session("other") == {"other": True}
        assert [c.checkpoint_id for c in await sm.list_checkpoints("run")] == cps[:0:-1]  # the lost one is gone
        for step, cp in enumerate(cps[1:], 2):
            assert await sm.restore_checkpoint(cp) == state(step)
        assert (await sm.fsck(full=True)).ok
        await sm.save_session("run", state(5))
        assert not (await sm.repair_refs()).damaged  # a second run finds nothing to do
    finally:
        await sm.close()


async def test_a_ref_with_damaged_data_goes_back_to_its_newest_intact_state(tmp_path: Path) -> None:
    path = tmp_path / "store"
    cps = await fill(path)
    async with castate.StateManager(path) as sm:
        await sm.save_session("run", state(5))  # the head: its own commit and tree
        head = (await sm.resolve("run")).commit
        commit = await sm.repository.read_commit(head)
        await sm.repository.backend.quarantine_objects([commit.root])  # its root is gone
        report = await sm.fsck()
        assert set(report.damaged_refs) == {names.session_ref("run")}
        rolled = await sm.roll_back_damaged(list(report.damaged_refs))
        assert [(r.ref, r.damaged, r.skipped) for r in rolled] == [(names.session_ref("run"), head, 0)]
        assert await sm.load_session("run") == state(4)
        assert (await sm.fsck()).ok
        entry = (await sm.repository.reflog(names.session_ref("run")))[-1]
        assert (entry.old, entry.new) == (head, rolled[0].restored)  # the damaged target stays on record
        assert entry.message.startswith("repair: back from damaged")
        assert await sm.restore_checkpoint(cps[-1]) == state(4)


async def test_a_ref_without_an_intact_earlier_state_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "store"
    async with castate.StateManager(path) as sm:
        await sm.save_session("only", state(1))
        cid = (await sm.resolve("only")).commit
        await sm.repository.backend.quarantine_objects([cid])
        rolled = await sm.roll_back_damaged([names.session_ref("only")])
        assert [(r.restored, r.skipped) for r in rolled] == [(None, 0)]
        assert (await sm.resolve("only")).commit == cid
