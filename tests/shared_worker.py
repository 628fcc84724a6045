"""A worker process for the shared-store tests: saves and checkpoints its own session in a store URL.

    python -m tests.shared_worker URL WORKER STEPS OUT.json

Every worker's state holds the same large document and the same system prompt (content
shared across workers, so the store should keep it once) plus messages of its own. Each
step saves the session; every third step takes a checkpoint; each step also saves a
draft (large enough to be an object of its own) in a scratch session and deletes that
session, which leaves garbage for gc, and a message five steps later quotes that draft
word for word: a save that dedups against garbage, the case gc must not race. The worker
writes the
blake3 digest of the canonical JSON of every state it was promised (checkpoints and the
final session head) to OUT.json.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import blake3
import orjson

import castate

WORDS = [f"w{i:03d}" for i in range(400)]


def shared_document() -> str:
    rng = random.Random(7)  # the same bytes in every worker
    return " ".join(rng.choice(WORDS) for _ in range(40_000))


def digest(state: Any) -> str:
    return blake3.blake3(orjson.dumps(state, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def main(url: str, worker: int, steps: int, out: str) -> None:
    rng = random.Random(worker)
    state: dict[str, Any] = {
        "document": shared_document(),
        "system": {"prompt": "You are a careful analyst. " * 40, "tools": ["search", "fetch", "python"]},
        "messages": [],
        "worker": worker,
        "step": 0,
    }
    promised: dict[str, str] = {}
    drafts: list[str] = []
    session = f"worker-{worker}"
    async with castate.StateManager(url) as sm:
        for step in range(1, steps + 1):
            state["step"] = step
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 200)))
            drafts.append(f"draft {worker}/{step}: " + " ".join(rng.choice(WORDS) for _ in range(700)))
            quoted = drafts[-6] if len(drafts) > 5 else ""
            message = {"role": "assistant", "worker": worker, "step": step, "content": words, "quote": quoted}
            state["messages"].append(message)
            await sm.save_session(session, state)
            if step % 3 == 0:
                promised[await sm.create_checkpoint(session, f"step-{step}")] = digest(state)
            scratch = f"scratch-{worker}-{step}"
            await sm.save_session(scratch, {"draft": drafts[-1], "n": step})
            await sm.delete_session(scratch)
        promised["session:" + session] = digest(state)
    with open(out, "wb") as f:
        f.write(orjson.dumps(promised))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
