"""Blob-backend calls per save, per checkpoint and per cold restore, on each database backend
(and, for S3, the HTTP requests those calls sent).

Each call of a ``BlobBackend`` method is one round trip to the server (PostgreSQL: one
statement; Redis: one script or pipeline) or one transaction in one worker-thread hop
(SQLite), so counting the calls the pack store makes counts round trips. Nested calls (a
default method calling another) count once. An S3 call may send several requests (the
root ref group, blobs, the session's ref group): they are counted too. Servers are
throwaway ones on loopback.

    python -m tools.bench.roundtrips --steps 50
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import castate
from castate.backends.blob import BlobBackend
from castate.backends.urls import open_backend
from tools.bench.workload import Workload
from tools.servers import PostgresServer, RedisServer, SeaweedServer

METHODS = (
    "get_blobs", "get_ranges", "list_blobs", "put_blobs", "delete_blobs", "get_refs", "get_ref",
    "list_refs", "update_refs", "commit", "copy_ref", "reflog", "expire_reflog", "now_ns", "legacy_objects",
)  # fmt: skip
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("depth", default=0)


class Counter:
    """Counts the outermost blob-backend calls, by phase."""

    def __init__(self) -> None:
        self.phase = "open"
        self.calls: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.http: collections.Counter[str] = collections.Counter()  # S3 requests, by phase

    def wrap(self, backend: BlobBackend) -> BlobBackend:
        for name in METHODS:
            original = getattr(backend, name)

            @functools.wraps(original)
            async def counted(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                depth = _depth.get()
                if depth == 0:
                    self.calls[self.phase][_name] += 1
                token = _depth.set(depth + 1)
                sent = getattr(backend, "requests", 0)
                try:
                    return await _original(*args, **kwargs)
                finally:
                    _depth.reset(token)
                    if depth == 0:
                        self.http[self.phase] += getattr(backend, "requests", 0) - sent

            setattr(backend, name, counted)
        return backend


async def measure(url: str, steps: int) -> dict[str, float]:
    """Average calls per steady save and checkpoint (after the first), and per cold restore."""
    counter = Counter()
    workload = Workload(0, steps)
    sm = castate.StateManager(counter.wrap(open_backend(url)))  # type: ignore[arg-type]
    middle = ""
    for n in range(steps):
        workload.step()
        counter.phase = "save" if n else "first save"
        await sm.save_session("bench", workload.state)
        counter.phase = "checkpoint" if n else "first checkpoint"
        cp = await sm.create_checkpoint("bench", f"step-{n}")
        if n == steps // 2:
            middle = cp
    await sm.close()
    counter.phase = "open"
    counter.calls["open"].clear()
    fresh = castate.StateManager(counter.wrap(open_backend(url)))  # type: ignore[arg-type]
    await fresh.repository.open()
    counter.phase = "cold restore"
    await fresh.restore_checkpoint(middle)
    await fresh.close()
    steady = steps - 1
    return {
        "save": sum(counter.calls["save"].values()) / steady,
        "checkpoint": sum(counter.calls["checkpoint"].values()) / steady,
        "open": sum(counter.calls["open"].values()),
        "cold restore": sum(counter.calls["cold restore"].values()),
        "http save": counter.http["save"] / steady,
        "http checkpoint": counter.http["checkpoint"] / steady,
        "http open": counter.http["open"],
        "http cold restore": counter.http["cold restore"],
    }


async def main(steps: int) -> None:
    print(f"blob-backend calls (round trips), {steps} steps of the agent workload")
    print("| backend | per save | per checkpoint | open a store | cold restore of the middle step |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("SQLite", f"sqlite:///{Path(tmp) / 'state.db'}")]
        with PostgresServer() as pg, RedisServer() as redis, SeaweedServer() as weed:
            os.environ.update(weed.env())
            weed.create_bucket("castate-bench")
            rows += [("PostgreSQL", pg.url), ("Redis", redis.url), ("S3 (SeaweedFS)", weed.url("castate-bench", "rt"))]
            for name, url in rows:
                r = await measure(url, steps)
                print(
                    f"| {name} | {r['save']:.2f} | {r['checkpoint']:.2f} | {r['open']:.0f} | {r['cold restore']:.0f} |"
                )
                if name.startswith("S3"):
                    print(
                        f"| {name}, HTTP requests | {r['http save']:.2f} | {r['http checkpoint']:.2f} | "
                        f"{r['http open']:.0f} | {r['http cold restore']:.0f} |"
                    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    asyncio.run(main(ap.parse_args().steps))
