"""A writer for the gc concurrency test: saves, checkpoints, forgets and removes sessions
continuously, with content shared across writers and cycles so that saves keep finding
objects of removed sessions (garbage that gc may be collecting at that very moment).

Writes a JSON log of what must exist at the end: each live session's last step and each
live checkpoint's step; the test rebuilds the states with ``state_at``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

import castate
from castate.repository.retention import Policy

STEPS = 12


def shared_blob(j: int) -> str:
    return f"shared blob {j} " * 300  # > 2 KiB: an object of its own, the same in every writer


def state_at(writer: int, cycle: int, step: int) -> dict[str, Any]:
    return {
        "owner": f"w{writer}-{cycle}",
        "step": step,
        # The same messages for every writer and cycle: long-list runs dedup against old sessions.
        "messages": [{"i": i, "content": f"message {i} " * (5 + i % 20)} for i in range(40 * step)],
        "shared": [shared_blob((cycle + j) % 7) for j in range(1 + step % 4)],
        "scratch": {"cycle": cycle, "text": f"scratch {writer} {cycle} {step} " * 40},
        # This writer's own rotating blobs: unreachable between uses (once the head moves on and
        # the reflog is expired), then needed again, by which time gc may be deleting them.
        "rotating": f"rotating {writer} {step % 5} " * 300,
    }


async def main(path: str, writer: int, seconds: float, log_path: str) -> None:
    live_sessions: dict[str, tuple[int, int]] = {}  # session -> (cycle, last step)
    live_checkpoints: dict[str, tuple[int, int]] = {}  # checkpoint id -> (cycle, step)
    deadline = time.monotonic() + seconds
    cycle = 0
    saves = 0
    while time.monotonic() < deadline or cycle < 3:
        session = f"w{writer}-{cycle}"
        # A fresh backend per cycle seals the previous pack, so gc can rewrite it while we write.
        sm = castate.StateManager(castate.FileStorageBackend(path, durability="relaxed"))
        for step in range(STEPS):
            await sm.save_session(session, state_at(writer, cycle, step))
            saves += 1
            live_sessions[session] = (cycle, step)
            if step % 3 == 2:
                cp = await sm.create_checkpoint(session, f"step-{step}")
                live_checkpoints[cp] = (cycle, step)
        if cycle >= 1:
            previous = f"w{writer}-{cycle - 1}"
            report = await sm.forget(Policy(last=1, keep_named=False), session_ids=[previous])
            for d in report.removed:
                live_checkpoints.pop(d.item.id, None)
        if cycle >= 2:
            old = f"w{writer}-{cycle - 2}"
            await sm.delete_session(old)
            live_sessions.pop(old)
            for cp in [c for c in live_checkpoints if c.startswith(f"{old}/")]:
                live_checkpoints.pop(cp)
        await sm.close()
        cycle += 1
    log = {"writer": writer, "saves": saves, "sessions": live_sessions, "checkpoints": live_checkpoints}
    Path(log_path).write_bytes(orjson.dumps(log))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]))
