"""Several processes writing one store at once, with gc running beside them.

Three writers (four on S3) increment a counter in one shared session, others in sessions of their own
(``tests/concurrent_writer.py``), while this process runs gc again and again. A lost race must
surface as ConflictError, never as a silent overwrite: the session's reflog must hold exactly
the saves the writers were told succeeded, in one unbroken chain in which every save adds one
to the counter of the save before it (no update lost), and every checkpoint holds a state
some writer saved. Writers of their own sessions never conflict. tests/test_gc_concurrency.py
covers gc beside writers that also forget and remove sessions. The local store runs it
encrypted too, SQLite and S3 with CASTATE_FULL=1 (tests/encrypted_support.py).
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import castate
from castate.backends.urls import open_backend
from castate.repository import refs as names
from tests.concurrent_writer import state_of
from tests.encrypted_support import env_key, is_encrypted, use_encryption
from tests.full_run import CONCURRENCY_SECONDS, FULL

ROOT = Path(__file__).resolve().parents[1]
SECONDS = CONCURRENCY_SECONDS  # 4 s; 30 s with CASTATE_FULL=1
WRITERS = [("shared", 0), ("shared", 1), ("shared", 2), ("own-3", 3), ("own-4", 4)]
# On S3 four processes race for the one session (a conditional PUT of its ref object decides).
WRITERS_S3 = [("shared", 0), ("shared", 1), ("shared", 2), ("shared", 3), ("own-4", 4)]


# (backend, encrypted): the encrypted cases beyond the local store run with CASTATE_FULL=1.
CASES = [("local", False), ("sqlite", False), ("s3", False), ("local", True)]
CASES += [("sqlite", True), ("s3", True)] if FULL else []


@pytest.mark.parametrize(("kind", "encrypted"), CASES, ids=[k + ("-encrypted" if e else "") for k, e in CASES])
async def test_racing_writers_lose_no_update_and_gc_runs_beside_them(
    tmp_path: Path, kind: str, encrypted: bool, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)  # CASTATE_KEY: the writers open the store with it
    writers = WRITERS_S3 if kind == "s3" else WRITERS
    if kind == "s3":  # SeaweedFS: conditional PUTs decide the races, a lease in an object holds gc
        store = request.getfixturevalue("seaweed_url")
    else:
        store = str(tmp_path / "state") if kind == "local" else f"sqlite:///{tmp_path / 'state.db'}"
    async with castate.StateManager(open_backend(store, key=env_key())) as sm:
        await sm.save_session("bootstrap", {"ok": True})
    assert await is_encrypted(store) == encrypted
    logs = [tmp_path / f"writer-{w}.json" for _, w in writers]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.concurrent_writer", store, str(w), session, str(SECONDS), str(log)],
            cwd=ROOT,
        )
        for (session, w), log in zip(writers, logs, strict=True)
    ]
    gc_runs = deleted = left = 0
    try:
        async with castate.StateManager(open_backend(store)) as gc_manager:
            while any(p.poll() is None for p in procs):
                report = await gc_manager.gc(grace=0.2)  # whatever a save left unreferenced would go
                assert not report.warnings
                if report.objects > 2 and all(p.poll() is None for p in procs):
                    gc_runs += 1  # a whole gc while every writer was saving (gc must not starve)
                deleted += report.deleted
                left = max(left, report.left)  # in packs the writers still append to
                await asyncio.sleep(0.1)
            assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
            deleted += (await gc_manager.gc(grace=0)).deleted  # their packs are free now
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

    saved: dict[str, dict[bytes, tuple[int, int]]] = {}  # session -> commit -> (writer, counter)
    conflicts: dict[str, int] = {}
    checkpoints: list[str] = []
    for (session, w), log_path in zip(writers, logs, strict=True):
        log = orjson.loads(log_path.read_bytes())
        conflicts[session] = conflicts.get(session, 0) + log["conflicts"]
        for commit, counter in log["saves"]:
            saved.setdefault(session, {})[bytes.fromhex(commit)] = (w, counter)
        checkpoints += [cp for cp, _ in log["checkpoints"]]

    async with castate.StateManager(open_backend(store)) as sm:
        fsck = await sm.fsck(full=True, quarantine=False)
        assert fsck.ok, (fsck.problems[:3], fsck.storage)
        for session, commits in saved.items():
            entries = await sm.repository.reflog(names.session_ref(session))
            assert [e.new for e in entries if e.new] == [e.new for e in entries]  # no deletions
            # One unbroken chain: each entry moves the ref from where the previous one left it.
            assert all(b.old == a.new for a, b in itertools.pairwise(entries))
            assert entries[0].old is None
            # Exactly the saves the writers were told succeeded, each once.
            assert len(entries) == len(commits)
            assert {e.new for e in entries} == set(commits)
            # Every save added one to the counter of the one before it: no update was lost.
            assert [commits[e.new][1] for e in entries] == list(range(1, len(entries) + 1))  # type: ignore[index]
            last_writer, last = commits[entries[-1].new]  # type: ignore[index]
            assert await sm.load_session(session) == state_of(last, last_writer)
        for cp in checkpoints:
            commit = (await sm.resolve(cp)).commit
            session = names.parse_checkpoint_id(cp)[0]
            writer, counter = saved[session][commit]
            assert await sm.restore_checkpoint(cp) == state_of(counter, writer)
    shared_saves = len(saved["shared"])
    own = sorted(s for s in saved if s.startswith("own-"))
    print(
        f"\n{kind}: {len(writers)} writers, {SECONDS:.0f}s: shared session {shared_saves} saves and "
        f"{conflicts['shared']} conflicts; own sessions {' and '.join(str(len(saved[s])) for s in own)} saves; "
        f"{len(checkpoints)} checkpoints; gc ran whole {gc_runs} times beside them (up to {left} garbage objects in "
        f"live packs) and deleted {deleted} objects in all"
    )
    assert conflicts["shared"] > 0  # the writers really raced
    assert all(conflicts[s] == 0 for s in own)
    assert gc_runs >= 3
    if kind == "s3":
        # On S3 a save's blobs are stored before the conditional PUT that decides the race:
        # a losing save leaves them for gc, which deletes them beside the writers.
        assert deleted > 0
    else:
        # A losing save stores nothing: its commit's checks fail before any blob is written
        # (the local store checks under its journal lock, SQLite rolls back its one
        # transaction), so conflicts leave no garbage. tests/test_gc_concurrency.py has gc
        # deleting beside writers.
        assert deleted == left == 0
