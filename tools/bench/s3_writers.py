"""Saves per second of several writer processes on one S3 store, each on its own session.

A throwaway SeaweedFS on loopback (``tools.servers``); every writer is a process of its own
with a ``StateManager`` on the same ``s3://`` URL. Each writer saves a session of its own: a
growing message list (a new message of about 1 KB per save) and a changing scratch field,
the shape of an agent's state. All writers start together and save for ``--seconds``;
the report gives the saves of all writers per second, and the HTTP requests per save.

    python -m tools.bench.s3_writers --writers 8 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

import castate
from castate.backends.s3 import S3Backend

WORDS = [f"w{i:03d}" for i in range(300)]


def advance(st: dict[str, Any], rng: random.Random) -> None:
    """One step of a writer's state: a new message of about 1 KB, a new scratch field."""
    st["step"] += 1
    st["messages"].append({"i": st["step"], "role": "assistant", "content": " ".join(rng.choices(WORDS, k=150))})
    st["scratch"] = " ".join(rng.choices(WORDS, k=80))


async def child(url: str, writer: int, start: float, seconds: float) -> dict[str, float]:
    rng = random.Random(writer)
    st: dict[str, Any] = {"writer": writer, "step": 0, "messages": [], "scratch": ""}
    async with castate.StateManager(url) as sm:
        advance(st, rng)
        await sm.save_session(f"writer-{writer}", st)  # opens the store
        backend = sm.repository._store
        assert isinstance(backend, S3Backend)
        await asyncio.sleep(max(0.0, start - time.time()))
        sent = backend.requests
        saves = 0
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            advance(st, rng)
            await sm.save_session(f"writer-{writer}", st)
            saves += 1
        took = time.monotonic() - began
        return {"saves": saves, "seconds": took, "requests": backend.requests - sent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        url, writer, start, seconds = args.child
        print(json.dumps(asyncio.run(child(url, int(writer), float(start), float(seconds)))))
        return
    from tools.servers import SeaweedServer

    with SeaweedServer() as weed:
        os.environ.update(weed.env())
        weed.create_bucket("castate-bench")
        for n in sorted({1, args.writers}):
            url = weed.url("castate-bench", f"w{n}")
            asyncio.run(_create(url))
            start = time.time() + 3 + 0.3 * n  # every writer imported and opened by then
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tools.bench.s3_writers",
                        "--child",
                        url,
                        str(w),
                        str(start),
                        str(args.seconds),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for w in range(n)
            ]
            results = [json.loads(p.communicate()[0]) for p in procs]
            saves = sum(r["saves"] for r in results)
            rate = sum(r["saves"] / r["seconds"] for r in results)
            requests = sum(r["requests"] for r in results) / max(saves, 1)
            print(
                f"{n} writer(s): {saves} saves in {args.seconds:.0f} s, {rate:.0f} saves/s together, "
                f"{requests:.2f} requests per save"
            )


async def _create(url: str) -> None:
    b = S3Backend(url)
    await b.open()
    await b.close()


if __name__ == "__main__":
    main()
