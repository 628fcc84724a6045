"""Per-save cost of a bounded context: the workload with its lists trimmed to a window, against none.

    python -m tools.bench.trim                       # 1,000 steps, window 300 vs none
    python -m tools.bench.trim --steps 500 --window 100 --json out.json

Agents keep the last N messages; ``Workload(window=N)`` trims the transcript and every
agent's memory from the front after each step. For each combination of window (none, N)
and state (plain dicts, ``castate.tracked``) this drives the workload and times every
save, twice: the encoder alone (``Encoder.encode_root`` with the previous save's shadow,
no backend) and a whole ``Repository.save`` on a ``castate.MemoryBackend``. It prints the
median milliseconds per save, over all steps and over the last 100, and checks once, at
the end, that the incremental root equals a fresh encoding's.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import statistics
import time
from typing import Any

import castate
from castate.codec import Encoder
from tools.bench.workload import Workload

LAST = 100


def _workload(seed: int, steps: int, window: int | None, tracked: bool) -> Workload:
    w = Workload(seed, steps, window=window)
    if tracked:
        w.state = castate.tracked(w.state)
    return w


def _check(state: Any, root: bytes) -> None:
    fresh, _ = Encoder().encode_root(copy.deepcopy(state), None)
    if fresh != root:
        raise SystemExit("incremental encoding diverged from a fresh encoding")


def encode_only(seed: int, steps: int, window: int | None, tracked: bool) -> list[float]:
    """Milliseconds of each save's encoding, against the previous save's shadow."""
    w = _workload(seed, steps, window, tracked)
    shadow = None
    times: list[float] = []
    root = b""
    for _ in range(steps):
        w.step()
        t = time.perf_counter()
        root, shadow = Encoder().encode_root(w.state, shadow)
        times.append((time.perf_counter() - t) * 1e3)
    _check(w.state, root)
    return times


async def _repository(seed: int, steps: int, window: int | None, tracked: bool) -> list[float]:
    w = _workload(seed, steps, window, tracked)
    repo = castate.Repository(castate.MemoryBackend())
    await repo.open()
    times: list[float] = []
    root = b""
    for _ in range(steps):
        w.step()
        t = time.perf_counter()
        saved = await repo.save("sessions/bench", w.state)
        times.append((time.perf_counter() - t) * 1e3)
        root = saved.root
    await repo.close()
    _check(w.state, root)
    return times


def with_repository(seed: int, steps: int, window: int | None, tracked: bool) -> list[float]:
    """Milliseconds of each ``Repository.save`` on a MemoryBackend."""
    return asyncio.run(_repository(seed, steps, window, tracked))


def main() -> None:
    ap = argparse.ArgumentParser(description="Median ms per save with and without a trimmed window.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--json", default=None, help="also write every number to this file")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    print(f"{'window':>8} {'state':>8} {'path':>12} {'median ms':>10} {'last-100 ms':>12}")
    for window in (None, args.window):
        for tracked in (False, True):
            for name, fn in (("encode", encode_only), ("memory-save", with_repository)):
                gc.collect()
                times = fn(args.seed, args.steps, window, tracked)
                row = {
                    "window": window,
                    "state": "tracked" if tracked else "plain",
                    "path": name,
                    "median_ms": statistics.median(times),
                    "last_median_ms": statistics.median(times[-LAST:]),
                    "times_ms": times,
                }
                rows.append(row)
                print(
                    f"{window or '-':>8} {row['state']:>8} {name:>12} "
                    f"{row['median_ms']:>10.2f} {row['last_median_ms']:>12.2f}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "steps": args.steps, "rows": rows}, f)


if __name__ == "__main__":
    main()
