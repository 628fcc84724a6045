"""A writer for crash tests: saves and checkpoints deterministic states until killed.

Prints ``ok <step> <checkpoint id>`` after each checkpoint returns, so the test knows
what castate has promised to keep.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import castate


def state_at(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "messages": [{"i": i, "content": f"message {i} " * (20 + i % 30)} for i in range(step % 150 * 3)],
        "scratch": f"scratch {step} " * 50,
        "blob": bytes([step % 256]) * 3000,
    }


async def main(path: str, start: int) -> None:
    sm = castate.StateManager(path)
    step = start
    while True:
        await sm.save_session("crash", state_at(step))
        cp = await sm.create_checkpoint("crash", f"step-{step}")
        print(f"ok {step} {cp}", flush=True)
        step += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
