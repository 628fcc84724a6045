"""Blob-backend commits alone: the cost of a durable save's storage step, per backend.

``python -m tools.bench.commits [--commits 400] [--rounds 2]`` times ``commit`` of one save's
worth of blobs (a 3 KB pack and a 300 B index segment, random bytes) plus one ref move on the
local directory store and on SQLite, durable and relaxed, alternating the stores each round.
It reports the median and the 10th and 90th percentiles per store: the part of a save that is
fsync and file-system work rather than encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from castate.backends.base import RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.local import LocalBackend
from castate.backends.sqlite import SQLiteBackend


async def timed_commits(backend: BlobBackend, n: int) -> list[float]:
    await backend.open()
    previous: bytes | None = None
    times = []
    try:
        for _ in range(n):
            blobs = [
                (f"packs/{os.urandom(32).hex()}", os.urandom(3000)),
                (f"index/{os.urandom(32).hex()}", os.urandom(300)),
            ]
            new = os.urandom(32)
            start = time.perf_counter()
            await backend.commit(blobs, [RefUpdate("sessions/s", new, previous)], message="save")
            times.append((time.perf_counter() - start) * 1000)
            previous = new
    finally:
        await backend.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="castate-commits-")
    makers: dict[str, Callable[[str], BlobBackend]] = {
        "local": lambda p: LocalBackend(p),
        "local-relaxed": lambda p: LocalBackend(p, durability="relaxed"),
        "sqlite": lambda p: SQLiteBackend(p + ".db"),
        "sqlite-relaxed": lambda p: SQLiteBackend(p + ".db", durability="relaxed"),
    }
    results: dict[str, list[float]] = {name: [] for name in makers}
    for r in range(args.rounds):
        for name, make in makers.items():
            results[name] += asyncio.run(timed_commits(make(os.path.join(root, f"{name}-{r}")), args.commits))
    print("| store | median ms | p10 | p90 |\n|---|---|---|---|")
    for name, times in results.items():
        q = statistics.quantiles(times, n=10)
        print(f"| {name} | {statistics.median(times):.3f} | {q[0]:.3f} | {q[-1]:.3f} |")


if __name__ == "__main__":
    main()
