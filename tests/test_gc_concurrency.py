"""gc while other processes write: several writer processes save, checkpoint, forget and
remove sessions continuously while gc runs again and again with a short grace period
(0.2 s, and every other run none at all).
Afterwards fsck finds no damage and every ref loads exactly what was saved."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson

import castate
from castate.repository import refs as names
from tests.gc_writer import state_at
from tests.strategies import same

ROOT = Path(__file__).resolve().parents[1]
WRITERS = 3
SECONDS = float(os.environ.get("CASTATE_GC_SECONDS", "8"))


async def test_gc_is_safe_while_writers_save(tmp_path: Path) -> None:
    store = tmp_path / "state"
    async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
        await sm.save_session("bootstrap", {"ok": True})
    logs = [tmp_path / f"writer-{i}.json" for i in range(WRITERS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.gc_writer", str(store), str(i), str(SECONDS), str(logs[i])], cwd=ROOT
        )
        for i in range(WRITERS)
    ]
    runs = deleted = 0
    gc_manager = castate.StateManager(castate.LocalBackend(store))
    try:
        while any(p.poll() is None for p in procs):
            # Grace 0 every other run: then nothing but the gc lock protocol keeps saves safe.
            report = await gc_manager.gc(grace=0.2 if runs % 2 else 0.0, reflog_expire=0)
            runs += 1
            deleted += report.deleted
            assert not report.warnings
            await asyncio.sleep(0.05)
        assert [p.wait(timeout=120) for p in procs] == [0] * WRITERS
        final = await gc_manager.gc(grace=0, reflog_expire=0)
        deleted += final.deleted
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        await gc_manager.close()
    print(f"gc ran {runs} times during the writes and deleted {deleted} objects")
    assert runs >= 3
    assert deleted > 0  # gc really collected while the writers worked

    async with castate.StateManager(castate.LocalBackend(store)) as sm:
        fsck = await sm.fsck(full=True)
        assert fsck.ok, (fsck.problems[:3], fsck.storage)
        assert fsck.dangling == 0
        expected_refs = {names.session_ref("bootstrap")}
        total_saves = 0
        for i, log_path in enumerate(logs):
            log = orjson.loads(log_path.read_bytes())
            total_saves += log["saves"]
            for session, (cycle, step) in log["sessions"].items():
                expected_refs.add(names.session_ref(session))
                assert same(await sm.load_session(session), state_at(i, cycle, step)), session
            for cpid, (cycle, step) in log["checkpoints"].items():
                expected_refs.add(names.checkpoint_ref(cpid))
                assert same(await sm.restore_checkpoint(cpid), state_at(i, cycle, step)), cpid
        assert set(await sm.repository.list_refs()) == expected_refs
        print(f"{WRITERS} writers made {total_saves} saves")
