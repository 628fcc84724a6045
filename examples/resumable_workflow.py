"""A multi-step workflow that survives being stopped: it saves after every step and resumes where it stopped.

    python examples/resumable_workflow.py --store ./state --steps 50

Stop it any way you like and run the same command again:

- Ctrl-C (or SIGTERM) finishes the current step, pauses the session in the store and exits;
  ``--pause-after N`` does the same after step N.
- ``kill -9`` (or a power cut) just stops it; the last saved step is on disk.

Either way the next run continues after the last saved step: no step is lost and none runs
twice. Every step saves the session; every 10 saves and every change of ``status`` become
automatic checkpoints (the newest 3 are kept); every 7th step calls a flaky tool inside
``checkpointed()``, so a failed call leaves no half-done work behind.

Prints one line per event: ``starting``, ``resuming after step N``, ``saved N``,
``rolled back step N``, ``paused after step N``, ``done N``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
from typing import Any

import castate
from castate.autocheckpoint import AutoCheckpoint

SESSION = "resumable-research-run"


def finding(step: int) -> str:
    """The work of one step (deterministic, so a rerun can be checked against it)."""
    return f"step {step}: " + hashlib.blake2b(str(step).encode(), digest_size=8).hexdigest()


class FlakyTool:
    """A tool call that fails the first time each process tries it."""

    def __init__(self) -> None:
        self.failed_once = False

    async def call(self, step: int) -> str:
        await asyncio.sleep(0.001)
        if not self.failed_once:
            self.failed_once = True
            raise ConnectionError(f"tool unavailable at step {step}")
        return f"tool result {step}"


async def run(store: str, steps: int, step_delay: float, pause_after: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    policy = AutoCheckpoint(every_saves=10, on_change="status", keep_last=3)
    async with castate.StateManager(store, auto_checkpoint=policy) as sm:
        state: dict[str, Any] | None = await sm.load_session(SESSION)
        if state is None:
            state = {"step": 0, "status": "running", "findings": [], "scratch": None}
            await sm.save_session(SESSION, state)
            print("starting", flush=True)
        else:
            if any(s.session_id == SESSION and s.paused for s in await sm.list_sessions()):
                state = await sm.resume_session(SESSION)
            print(f"resuming after step {state['step']}", flush=True)

        tool = FlakyTool()
        while state["step"] < steps:
            step = state["step"] + 1
            await asyncio.sleep(step_delay)  # the work of an agent step
            if step % 7 == 0:
                state = await risky_step(sm, state, step, tool)
            state["findings"].append(finding(step))
            state["step"] = step
            state["scratch"] = None
            await sm.save_session(SESSION, state)
            print(f"saved {step}", flush=True)
            if stop.is_set() or step == pause_after:
                await sm.pause_session(SESSION, reason="stopped by signal" if stop.is_set() else "pause-after")
                print(f"paused after step {step}", flush=True)
                return

        if state["status"] != "done":
            state["status"] = "done"
            await sm.save_session(SESSION, state)
        print(f"done {state['step']}", flush=True)


async def risky_step(sm: castate.StateManager, state: dict[str, Any], step: int, tool: FlakyTool) -> dict[str, Any]:
    """Save a draft, call the flaky tool; on failure the session rolls back to before the draft, and we retry."""
    while True:
        try:
            async with sm.checkpointed(SESSION, f"before-tool-{step}"):
                state["scratch"] = {"step": step, "draft": "half-done work"}
                await sm.save_session(SESSION, state)
                state["scratch"]["tool"] = await tool.call(step)
                return state
        except ConnectionError:
            print(f"rolled back step {step}", flush=True)
            rolled_back = await sm.load_session(SESSION)  # the session as it was before the draft
            assert rolled_back is not None
            state = rolled_back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", default="./state", help="castate store directory (default ./state)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--step-delay", type=float, default=0.05, help="seconds of simulated work per step")
    parser.add_argument("--pause-after", type=int, default=None, help="pause the session after this step and exit")
    args = parser.parse_args()
    asyncio.run(run(args.store, args.steps, args.step_delay, args.pause_after))


if __name__ == "__main__":
    main()
