"""A writer for the concurrency test: increments a counter in a session's state, over and over.

``python -m tests.concurrent_writer STORE WRITER SESSION SECONDS LOG`` (STORE: a directory or a
store URL). Each save builds on
the state this writer last read or wrote; when another writer saved the session meanwhile the
save raises ConflictError, and the writer reads the session again and goes on. The log (JSON)
lists every save that returned (commit id and the counter it holds), every checkpoint, and the
number of conflicts, so the test can account for each of them in the reflog.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

import castate
from castate.backends.urls import open_backend
from castate.errors import ConflictError


def state_of(counter: int, writer: int) -> dict[str, Any]:
    return {
        "counter": counter,
        "writer": writer,
        "notes": [f"note {i} " * 20 for i in range(counter % 40)],
        "blob": f"writer {writer} at {counter} " * 150,
    }


async def main(path: str, writer: int, session: str, seconds: float, log_path: str) -> None:
    saves: list[tuple[str, int]] = []
    checkpoints: list[tuple[str, int]] = []
    conflicts = 0
    async with castate.StateManager(open_backend(path)) as sm:
        current = await sm.load_session(session)
        counter = current["counter"] if current else 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                commit = await sm.save_session(session, state_of(counter + 1, writer))
            except ConflictError:
                conflicts += 1
                current = await sm.load_session(session)
                counter = current["counter"] if current else 0
                continue
            assert commit is not None
            counter += 1
            saves.append((commit, counter))
            if counter % 7 == 0:  # of the session's head now: this save, or a later one of another writer
                checkpoints.append((await sm.create_checkpoint(session, f"w{writer}-{counter}"), counter))
    log = {"saves": saves, "checkpoints": checkpoints, "conflicts": conflicts}
    Path(log_path).write_bytes(orjson.dumps(log))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]))
