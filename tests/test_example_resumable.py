"""examples/resumable_workflow.py: killed with SIGKILL mid-run or paused, it resumes with nothing lost or repeated."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import castate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "resumable_workflow.py"
SESSION = "resumable-research-run"
STEPS = 40

sys.path.insert(0, str(EXAMPLE.parent))
from resumable_workflow import finding  # noqa: E402


def start(store: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--store", str(store), "--steps", str(STEPS), "--step-delay", "0.01", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def saved_steps(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("saved ")]


def run_until_killed(store: Path, kill_after: int) -> list[str]:
    """Start the workflow, SIGKILL it once it has reported step ``kill_after`` saved; all lines it printed."""
    proc = start(store)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("saved ") and int(line.split()[1]) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    # Read the rest through the same file object: the loop above may have read lines ahead into
    # its buffer, which communicate() (reading the raw pipes) would drop, hiding saves printed
    # before the kill landed on a busy machine.
    lines += proc.stdout.read().strip().splitlines()
    assert proc.stderr is not None
    proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, lines)
    return lines


def run_to_end(store: Path, *extra: str) -> list[str]:
    proc = start(store, *extra)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip().splitlines()


def resumed_after(lines: list[str]) -> int:
    first = lines[0]
    assert first.startswith("resuming after step "), lines[:3]
    return int(first.rsplit(" ", 1)[1])


async def stored(store: Path) -> tuple[dict[str, Any], castate.SessionInfo]:
    async with castate.StateManager(store) as sm:
        state = await sm.load_session(SESSION)
        (info,) = await sm.list_sessions()
    assert state is not None
    return state, info


def test_sigkill_mid_run_resumes_from_the_last_saved_step(tmp_path: Path) -> None:
    store = tmp_path / "state"
    rng = random.Random(6)
    promised = 0
    for kill_after in sorted(rng.sample(range(3, STEPS - 5), 3)):
        if kill_after <= promised:
            continue
        lines = run_until_killed(store, kill_after)
        if promised:
            resumed = resumed_after(lines)
            assert promised <= resumed <= promised + 1
            assert saved_steps(lines)[0] == resumed + 1  # no step runs twice
        last = saved_steps(lines)[-1]
        state, _ = asyncio.run(stored(store))
        # "saved N" is printed after save_session returned; the kill may land before the print
        assert state["step"] in (last, last + 1)
        assert state["findings"] == [finding(i) for i in range(1, state["step"] + 1)]
        promised = last

    lines = run_to_end(store)
    resumed = resumed_after(lines)
    assert promised <= resumed <= promised + 1
    assert saved_steps(lines) == list(range(resumed + 1, STEPS + 1))
    assert lines[-1] == f"done {STEPS}"
    state, info = asyncio.run(stored(store))
    assert state["findings"] == [finding(i) for i in range(1, STEPS + 1)]  # nothing lost, nothing twice
    assert state["scratch"] is None  # no half-done tool work survived
    assert state["status"] == "done"
    assert not info.paused


def test_pause_then_resume(tmp_path: Path) -> None:
    store = tmp_path / "state"
    lines = run_to_end(store, "--pause-after", "9")
    assert lines[0] == "starting"
    assert lines[-1] == "paused after step 9"
    assert "rolled back step 7" in lines  # the flaky tool failed once and its draft was rolled back
    state, info = asyncio.run(stored(store))
    assert state["step"] == 9
    assert info.paused
    assert info.metadata["pause_reason"] == "pause-after"

    lines = run_to_end(store)
    assert lines[0] == "resuming after step 9"
    assert saved_steps(lines) == list(range(10, STEPS + 1))
    state, info = asyncio.run(stored(store))
    assert state["findings"] == [finding(i) for i in range(1, STEPS + 1)]
    assert not info.paused
    assert info.metadata["resumed_at"] >= info.metadata["paused_at"]


def test_sigterm_pauses_after_the_current_step(tmp_path: Path) -> None:
    store = tmp_path / "state"
    proc = start(store)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("saved 5"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    lines += rest.strip().splitlines()
    assert proc.returncode == 0
    assert lines[-1].startswith("paused after step ")
    paused_at = int(lines[-1].rsplit(" ", 1)[1])
    state, info = asyncio.run(stored(store))
    assert info.paused
    assert state["step"] == paused_at == saved_steps(lines)[-1]
