"""One big input case in a process of its own, for tests/test_bad_input.py: saves it, loads it back,
checks the store, and prints a JSON line with the outcome, the time and the peak memory (RSS).

``python -m tests.big_input CASE STORE``; the cases are in ``CASES``.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

import castate
from castate.errors import CastateError


def text_100mb() -> dict[str, Any]:
    return {"doc": random.Random(1).randbytes(50 << 20).hex()}  # 100 MiB of text that does not repeat


def bytes_100mb() -> dict[str, Any]:
    return {"raw": random.Random(2).randbytes(100 << 20)}


def dict_1m() -> dict[str, Any]:
    return {"index": {f"key-{i}": i for i in range(1_000_000)}}


def list_1m() -> dict[str, Any]:
    return {"events": [{"i": i, "kind": "tick"} for i in range(1_000_000)]}


def nested_10k() -> dict[str, Any]:
    state: dict[str, Any] = {"leaf": True}
    for _ in range(10_000):
        state = {"child": state}
    return state


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "text_100mb": text_100mb,
    "bytes_100mb": bytes_100mb,
    "dict_1m": dict_1m,
    "list_1m": list_1m,
    "nested_10k": nested_10k,
}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(case: str, path: str) -> dict[str, Any]:
    state = CASES[case]()
    out: dict[str, Any] = {"case": case, "input_rss_mib": round(rss_mib(), 1)}
    async with castate.StateManager(path) as sm:
        await sm.save_session("small", {"before": True})
        started = time.perf_counter()
        try:
            await sm.save_session("big", state)
        except CastateError as exc:
            out.update(outcome="refused", error=f"{type(exc).__name__}: {exc}"[:300])
        else:
            out["save_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            back = await sm.load_session("big")
            out["load_s"] = round(time.perf_counter() - started, 2)
            out["outcome"] = "round-trip" if back == state else "DIFFERENT"
            del back
        out["store_intact"] = (await sm.fsck(full=True)).ok and await sm.load_session("small") == {"before": True}
        out["stored_mib"] = round(sum([i.size async for i in sm.repository.backend.iter_objects()]) / (1 << 20), 1)
    out["peak_rss_mib"] = round(rss_mib(), 1)
    return out


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))).decode() + "\n")
