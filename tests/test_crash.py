"""Kill a writer with SIGKILL mid-save: everything it was promised survives, the store stays usable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import castate
from tests.crash_writer import state_at

ROOT = Path(__file__).resolve().parents[1]
TRIALS = int(os.environ.get("CASTATE_CRASH_TRIALS", "6"))


def run_and_kill(path: Path, start: int, delay: float) -> list[tuple[int, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_writer", str(path), str(start)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    promised = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "ok":
            promised.append((int(parts[1]), parts[2]))
    return promised


async def test_sigkill_during_saves_loses_nothing_promised(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    path = tmp_path / "store"
    promised: list[tuple[int, str]] = []
    acknowledged = -1  # the last step whose save returned (the writer's or this test's own)
    start = 0
    for _ in range(TRIALS):
        new = run_and_kill(path, start, rng.uniform(0.4, 1.2))
        promised += new
        if new:
            acknowledged = new[-1][0]
        sm = castate.StateManager(path)
        try:
            recent = promised[-3:] + rng.sample(promised, min(3, len(promised)))
            for step, cp in recent:
                assert await sm.restore_checkpoint(cp) == state_at(step), f"checkpoint of step {step} changed"
            head = await sm.load_session("crash")
            if head is not None:
                # the last acknowledged save, or the one that was in flight when the writer died
                assert head["step"] in (acknowledged, acknowledged + 1)
                assert head == state_at(head["step"])
                start = head["step"] + 1
            await sm.save_session("crash", state_at(start))  # the store takes writes after the crash
            acknowledged = start
            start += 1
        finally:
            await sm.close()
    assert len(promised) > TRIALS
    sm = castate.StateManager(path)
    try:
        for step, cp in promised:  # every promise, once more, at the end
            assert await sm.restore_checkpoint(cp) == state_at(step), f"checkpoint of step {step} changed"
    finally:
        await sm.close()
