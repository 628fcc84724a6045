"""Kill a writer with SIGKILL mid-save: everything castate promised survives, the store stays usable.

Two kinds of trials, each running ``tests/crash_writer.py`` in a subprocess:

- random: the test kills the writer at a random moment of its save/checkpoint loop;
- chosen: the writer kills itself at a named point of the local backend's write path
  (``castate/backends/local/crashpoints.py``), e.g. between a volume write and its fsync.

After every kill: the store opens; a full fsck finds no damage (unreferenced garbage is
allowed); every checkpoint whose create call returned, and every checkpoint that exists,
holds exactly its state; each session head is the last acknowledged state or the one
whose save was in flight; every acknowledged save is in the reflog; the store takes new
saves. ``CASTATE_CRASH_TRIALS`` sets the number of random trials (6; 300 with
``CASTATE_FULL=1``, see tests/full_run.py); the chosen points run ``max(1, trials // 25)``
rounds with varied skip counts. docs/reliability.md gives the figures of the full run.
Each runs on an encrypted store too (``encrypted``, tests/encrypted_support.py): the random
kills of the local and SQLite writers by default, the chosen points and S3 with CASTATE_FULL=1.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from castate.backends.local.crashpoints import POINTS
from castate.repository import refs as names
from tests.conftest import S3_BUCKET
from tests.crash_writer import SESSIONS, manager, state_at
from tests.encrypted_support import ENCRYPTION, ENCRYPTION_FULL, is_encrypted, use_encryption
from tests.full_run import CRASH_TRIALS
from tools.servers import SeaweedServer

ROOT = Path(__file__).resolve().parents[1]
TRIALS = CRASH_TRIALS
POINT_ROUNDS = max(1, TRIALS // 25)
STORE_TRIALS = 25  # trials per store before starting a fresh one (keeps each fsck short)
MAX_DELAY = 0.3  # seconds after "start" within which a random kill lands
S3_TRIALS = max(4, TRIALS // 2)  # each kill's check reads the whole store back over HTTP

# (point, writer mode, whether the check after the kill saves, how many passes it may skip):
# in the plain mode the only whole-file rename after creation is the journal rewrite that
# drops a torn record, so the kill in the middle of a journal record is checked read-only and
# the next writer does that rewrite (once: it takes no skip), as a writer creates the first
# volume once.
POINT_PLAN = [
    ("volume-created", "local", True, 0),
    ("volume-mid-record", "local", True, 3),
    ("volume-before-sync", "local", True, 3),
    ("volume-after-sync", "local", True, 3),
    ("journal-mid-record", "local", False, 3),
    ("file-before-rename", "local", True, 0),
    ("journal-before-sync", "local", True, 3),
    ("journal-after-sync", "local", True, 3),
    ("volume-created", "rotate", True, 3),
    ("gc-before-unlink", "gc", True, 3),
    ("file-before-rename", "gc", True, 3),
    ("snapshot-before-rename", "snapshot", True, 3),
    ("journal-after-sync", "snapshot", True, 3),
]
MAX_SAVES = 60  # a writer that reaches no crash point in this many saves exits


@dataclass
class Ledger:
    """What the writers were promised and what was in flight, per store."""

    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SESSIONS, 0))  # next step
    acked: dict[str, int] = field(default_factory=dict)  # session -> last acknowledged step
    pending: dict[str, int] = field(default_factory=dict)  # session -> step of the save in flight
    checkpoints: dict[str, tuple[str, int]] = field(default_factory=dict)  # acknowledged id -> (session, step)
    commits: dict[str, set[str]] = field(default_factory=dict)  # session -> acknowledged commit ids
    gc_ran: bool = False
    last: str = ""

    def read(self, out: str) -> None:
        for line in out.splitlines():
            parts = line.split(" ")
            self.last = parts[0]
            if parts[0] == "save":
                self.pending[parts[1]] = int(parts[2])
            elif parts[0] == "saved":
                session, step = parts[1], int(parts[2])
                self.pending.pop(session, None)
                self.acked[session] = step
                self.commits.setdefault(session, set()).add(parts[3])
            elif parts[0] == "cpok":
                self.checkpoints[parts[3]] = (parts[1], int(parts[2]))
            elif parts[0] == "gc":
                self.gc_ran = True


def run_writer(path: Path | str, mode: str, ledger: Ledger, *, delay: float | None, env: dict[str, str]) -> int:
    """Run one writer until it is killed (after ``delay`` s, or by its own crash point)."""
    limit = [] if delay is not None else [str(MAX_SAVES)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_writer", str(path), mode, orjson.dumps(ledger.steps).decode(), *limit],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(120, proc.kill)  # a writer that hangs fails the test, never the run
    watchdog.start()
    try:
        first = proc.stdout.readline()
        if delay is not None:
            assert first == "start\n", f"writer did not start: {first!r}"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()  # the rest, from the same buffered reader as the first line
        proc.wait()
    finally:
        watchdog.cancel()
        proc.stdout.close()
    ledger.read(first + out)
    return proc.returncode


async def verify(
    path: Path | str, ledger: Ledger, outcomes: Counter[str], write: bool = True, store: str = "local"
) -> None:
    """Check the store after a kill, then (with ``write``) save once more; move the ledger on."""
    sm = manager(str(path), store)
    try:
        report = await sm.fsck(full=True, quarantine=False)
        if store == "s3":
            # S3 has no multi-object write: a writer killed between a save's packs and its index
            # segment (written last) leaves packs no segment lists. Garbage no ref reaches, which
            # fsck names as "no index segment lists it"; the next merge of segments lists them.
            storage = [p for p in report.storage if "no index segment lists it" not in p]
            assert not report.problems, report.problems[:3]
            assert not report.stored_corrupt, report.stored_corrupt[:3]
            assert not storage, storage
        else:
            assert report.ok, (report.problems[:3], report.stored_corrupt[:3], report.storage)
        outcomes["most unreferenced objects after a kill"] = max(
            outcomes["most unreferenced objects after a kill"], report.dangling
        )
        for cpid, (session, step) in ledger.checkpoints.items():
            assert await sm.restore_checkpoint(cpid) == state_at(session, step), f"checkpoint {cpid} changed"
        for session in SESSIONS:
            for cp in await sm.list_checkpoints(session):  # in-flight ones too, if they exist
                step = int(cp.name.removeprefix("step-"))
                assert await sm.restore_checkpoint(cp.checkpoint_id) == state_at(session, step), cp.checkpoint_id
            head = await sm.load_session(session)
            allowed = {ledger.acked.get(session), ledger.pending.get(session)} - {None}
            if head is None:
                assert not allowed - set(ledger.pending.values()), f"session {session} lost its head"
            else:
                assert head["step"] in allowed, f"{session} head is step {head['step']}, expected one of {allowed}"
                assert head == state_at(session, head["step"])
                if session in ledger.pending:
                    landed = head["step"] == ledger.pending[session]
                    outcomes["in-flight save landed" if landed else "in-flight save lost"] += 1
                ledger.acked[session] = head["step"]
                ledger.steps[session] = head["step"] + 1
            if not ledger.gc_ran:  # gc with reflog_expire=0 drops old reflog entries on purpose
                logged = {e.new.hex() for e in await sm.repository.reflog(names.session_ref(session)) if e.new}
                assert ledger.commits.get(session, set()) <= logged, "an acknowledged save is missing from the reflog"
            if not write:
                continue
            # The store takes writes after the crash.
            step = ledger.steps[session]
            commit = await sm.save_session(session, state_at(session, step))
            assert commit is not None
            ledger.acked[session] = step
            ledger.commits.setdefault(session, set()).add(commit)
            ledger.steps[session] = step + 1
        ledger.pending.clear()
    finally:
        await sm.close()


@ENCRYPTION
async def test_random_kills_lose_nothing_promised(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    rng = random.Random(20261127)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    ledger = Ledger()
    path = tmp_path / "store-0"
    for trial in range(TRIALS):
        if trial and trial % STORE_TRIALS == 0:
            path, ledger = tmp_path / f"store-{trial}", Ledger()
        mode = rng.choice(["local", "local", "rotate", "gc", "snapshot"])
        code = run_writer(path, mode, ledger, delay=rng.uniform(0, MAX_DELAY), env={})
        assert code == -signal.SIGKILL, f"writer exited with {code} before it was killed"
        outcomes[f"killed during {ledger.last or 'start'}"] += 1
        await verify(path, ledger, outcomes)
    print(f"\n{TRIALS} random kills in {time.monotonic() - started:.1f}s: {dict(sorted(outcomes.items()))}")
    assert await is_encrypted(path) == encrypted
    assert sum(v for k, v in outcomes.items() if k.startswith("killed")) == TRIALS


@ENCRYPTION_FULL
async def test_kills_at_chosen_points_lose_nothing_promised(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    reached: Counter[str] = Counter()
    for r in range(POINT_ROUNDS):
        path, ledger = tmp_path / f"store-{r}", Ledger()
        for point, mode, write, max_skip in POINT_PLAN:
            skip = 0 if r == 0 else rng.randint(0, max_skip)
            env = {"CASTATE_CRASH_POINT": point, "CASTATE_CRASH_SKIP": str(skip)}
            code = run_writer(path, mode, ledger, delay=None, env=env)
            assert code == -signal.SIGKILL, f"the writer never reached {point} (exit {code})"
            reached[point] += 1
            await verify(path, ledger, outcomes, write)
    print(
        f"\n{sum(reached.values())} kills at chosen points in {time.monotonic() - started:.1f}s: "
        f"{dict(reached)}; {dict(sorted(outcomes.items()))}"
    )
    assert set(reached) == set(POINTS)  # every point was reached and survived
    assert await is_encrypted(path) == encrypted


@ENCRYPTION
async def test_random_kills_of_a_format_2_writer_lose_nothing_promised(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same trials over format-2 packs in SQLite: a save is one transaction, gc rewrites chains."""
    use_encryption(monkeypatch, encrypted)
    rng = random.Random(20261205)
    outcomes: Counter[str] = Counter()
    ledger = Ledger()
    path = tmp_path / "store-0"
    for trial in range(TRIALS):
        if trial and trial % STORE_TRIALS == 0:
            path, ledger = tmp_path / f"store-{trial}", Ledger()
        mode = rng.choice(["sqlite", "sqlite-gc"])
        code = run_writer(path, mode, ledger, delay=rng.uniform(0, MAX_DELAY), env={})
        assert code == -signal.SIGKILL, f"writer exited with {code} before it was killed"
        outcomes[f"killed during {ledger.last or 'start'}"] += 1
        await verify(path, ledger, outcomes, store="sqlite")
    print(f"\n{TRIALS} random kills of a format-2 writer: {dict(sorted(outcomes.items()))}")
    assert await is_encrypted(f"sqlite:///{path / 'store.db'}") == encrypted
    assert sum(v for k, v in outcomes.items() if k.startswith("killed")) == TRIALS


@ENCRYPTION_FULL
async def test_random_kills_of_an_s3_writer_lose_nothing_promised(
    seaweed_server: SeaweedServer, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same trials over the S3 backend on SeaweedFS: a save is a root read, blob PUTs and one
    conditional PUT of the session's ref object; a writer killed in gc leaves its lease behind."""
    use_encryption(monkeypatch, encrypted)
    rng = random.Random(20261206)
    outcomes: Counter[str] = Counter()
    ledger = Ledger()
    url = seaweed_server.url(S3_BUCKET, f"crash{uuid.uuid4().hex[:8]}") + "&save_window=0.3&gc_lease=1"
    for _ in range(S3_TRIALS):
        mode = rng.choice(["s3", "s3-gc"])
        code = run_writer(url, mode, ledger, delay=rng.uniform(0.1, 0.1 + 2 * MAX_DELAY), env={})
        assert code == -signal.SIGKILL, f"writer exited with {code} before it was killed"
        outcomes[f"killed during {ledger.last or 'start'}"] += 1
        await verify(url, ledger, outcomes, store="s3")
    print(f"\n{S3_TRIALS} random kills of an S3 writer: {dict(sorted(outcomes.items()))}")
    assert await is_encrypted(url) == encrypted


def test_an_unknown_crash_point_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import castate.backends.local.crashpoints"],
        cwd=ROOT,
        env={**os.environ, "CASTATE_CRASH_POINT": "no-such-point"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "is not a crash point" in proc.stderr
