"""A demo workflow on the embedded default store: ``python -m castate.demo [--store ./state]``.

A small multi-agent session runs 200 steps. It saves its state after every step,
checkpoints before each "risky" tool call, fails once and rolls back to the checkpoint,
then prints the sessions, the checkpoints, and the bytes castate stored against the
bytes a full copy per save would have taken.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import orjson

import castate

WORDS = [
    "agent",
    "plan",
    "search",
    "result",
    "market",
    "report",
    "analysis",
    "data",
    "model",
    "query",
    "source",
    "revenue",
    "growth",
    "quarter",
    "risk",
    "customer",
    "product",
    "launch",
    "pricing",
    "forecast",
    "summary",
    "draft",
    "review",
    "table",
    "chart",
    "trend",
    "signal",
    "competitor",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


class Workflow:
    """A toy research workflow whose state grows like an agent session's."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.state: dict[str, Any] = {
            "task": "Quarterly market analysis",
            "step": 0,
            "status": "running",
            "messages": [],
            "agents": {name: {"role": name, "memory": []} for name in ("planner", "researcher", "writer")},
            "findings": {},
            "scratchpad": "",
        }

    def step(self) -> bool:
        """Advance one step; True when the step is about to call an external tool."""
        s, rng = self.state, self.rng
        s["step"] += 1
        agent = rng.choice(list(s["agents"]))
        message = {
            "role": "assistant",
            "agent": agent,
            "step": s["step"],
            "content": sentence(rng, rng.randint(20, 120)),
        }
        s["messages"].append(message)
        s["agents"][agent]["memory"].append(message)
        s["scratchpad"] = sentence(rng, 30)
        return bool(s["step"] % 25 == 0)

    def call_tool(self, fail: bool) -> None:
        if fail:
            self.state["status"] = "tool crashed half-way"
            self.state["findings"]["partial"] = "garbage"
            raise RuntimeError("external API timed out")
        url = f"https://example.com/report/{self.state['step']}"
        self.state["findings"][url] = " ".join(sentence(self.rng, 40) for _ in range(40))


def human(n: float) -> str:
    """Bytes in binary units, as ``castate stats`` prints them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n):,} B"
        n /= 1024
    return f"{n:,.1f} GiB"


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


async def run(store: Path, steps: int, session: str) -> None:
    manager = castate.StateManager(castate.FileStorageBackend(store))
    wf = Workflow()
    logical = 0
    checkpoints = 0
    disk_before = store_bytes(store) if store.exists() else 0
    started = time.perf_counter()
    async with manager:
        existing = await manager.load_session(session)
        if existing is not None:
            print(f"resuming session {session!r} from step {existing['step']}")
            wf.state = existing
        first_step = wf.state["step"]
        while wf.state["step"] < steps:
            risky = wf.step()
            await manager.save_session(session, wf.state)
            logical += len(orjson.dumps(wf.state))
            if risky:
                cp = await manager.create_checkpoint(session, f"before_tool_step_{wf.state['step']}")
                checkpoints += 1
                logical += len(orjson.dumps(wf.state))
                try:
                    wf.call_tool(fail=wf.state["step"] == 100)
                except RuntimeError as exc:
                    wf.state = await manager.restore_checkpoint(cp)
                    print(f"step {wf.state['step']}: {exc}; restored checkpoint {cp}")
                    wf.call_tool(fail=False)
                await manager.save_session(session, wf.state)
                logical += len(orjson.dumps(wf.state))
        elapsed = time.perf_counter() - started

        print(f"\nstore: {store.resolve()}")
        print("sessions:")
        for s in await manager.list_sessions():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.timestamp))
            print(f"  {s.session_id:<24} last saved {when}   {count(s.checkpoint_count, 'checkpoint')}")
        cps = await manager.list_checkpoints(session)
        print(f"checkpoints of {session!r} (newest first, {len(cps):,} in all):")
        for c in cps[:5]:
            print(f"  {c.checkpoint_id}")
        if len(cps) > 5:
            print(f"  ... and {len(cps) - 5} more")
        written = store_bytes(store) - disk_before
        saved, taken = count(steps - first_step, "step"), count(checkpoints, "checkpoint")
        print(f"\nthis run: {saved} saved, {taken} taken in {elapsed:.2f} s")
        print(f"  logical bytes (a full JSON copy per save and checkpoint): {human(logical)}")
        print(f"  bytes castate added to the store on disk:                {human(written)}")
        if written > 0:
            print(f"  {logical / written:.0f}x less than full copies")
        print(f"whole store on disk: {human(store_bytes(store))}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m castate.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=os.environ.get("CASTATE_STORE", "./state"), help="store directory")
    parser.add_argument(
        "--steps", type=int, default=200, help="run the workflow up to this step (default 200; resumes past steps)"
    )
    parser.add_argument(
        "--session", default="market_analysis_2024_q1", help="the session id to save under (default %(default)s)"
    )
    args = parser.parse_args()
    asyncio.run(run(Path(args.store), args.steps, args.session))


if __name__ == "__main__":
    main()
