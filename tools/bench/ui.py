"""What `castate ui` costs on the benchmark workload: the timeline of a long session and the
first level of a large state, against the library reads they replace.

Builds one session of the agent workload (``workload.py``) with a checkpoint every 10 steps
in a fresh local store, plus one session holding a single large state (``--big-mb``), then
measures, in the same run:

- the timeline document (every save with the bytes it newly stored and its logical size):
  cold (a fresh explorer), warm (again), and after one more save; against ``Repository.log``
  alone (the commits, no sizes) and a full ``stats`` walk of the store;
- the sessions table document;
- the first level of the large state (what the tree view opens with), against loading it
  whole.

    python -m tools.bench.ui --steps 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import castate
from castate.repository.browse import level
from castate.repository.tree import Loader
from castate.ui.explorer import Explorer
from tools.bench.common import CountingLocal, timed
from tools.bench.workload import Workload


def big_state(mb: int) -> dict[str, Any]:
    """About ``mb`` MB of JSON: a long message list, a large document, a wide dict."""
    part = mb * (1 << 20) // 3
    n_messages = part // 250
    return {
        "messages": [
            {"role": "user" if i % 2 else "assistant", "content": f"message {i}: " + "lorem ipsum dolor " * 12}
            for i in range(n_messages)
        ],
        "document": "".join(f"{i:08d} a line of a very large document\n" for i in range(part // 40)),
        "index": {f"key-{i:07d}": {"n": i, "tag": "x" * 60} for i in range(part // 90)},
    }


async def run(steps: int, seed: int, big_mb: int, root: Path) -> dict[str, Any]:
    store = root / "store"
    work = Workload(seed, steps + 1)  # one step more for the save after the first timeline
    async with castate.StateManager(castate.FileStorageBackend(store, durability="relaxed")) as sm:
        for i in range(steps):
            work.step()
            await sm.save_session("bench", work.state)
            if i % 10 == 9:
                await sm.create_checkpoint("bench", "every_10")
        big = big_state(big_mb)
        big_json = len(json.dumps(big))
        await sm.save_session("big", big)
        del big
    out: dict[str, Any] = {"steps": steps, "seed": seed}

    backend = CountingLocal(store)
    async with castate.StateManager(backend) as sm:
        explorer = Explorer(sm)
        _, t_log = await timed(lambda: sm.repository.log("sessions/bench"))
        backend.reads = 0
        timeline, t_cold = await timed(lambda: explorer.timeline("bench"))
        cold_reads = backend.reads
        backend.reads = 0
        _, t_warm = await timed(lambda: explorer.timeline("bench"))
        warm_reads = backend.reads
        work.step()
        await sm.save_session("bench", work.state)
        backend.reads = 0
        _, t_more = await timed(lambda: explorer.timeline("bench"))
        more_reads = backend.reads
        _, t_sessions = await timed(lambda: explorer.sessions())
        _, t_stats = await timed(lambda: sm.stats())
        out["timeline"] = {
            "saves": len(timeline["points"]),
            "cold_s": round(t_cold, 4),
            "cold_objects_read": cold_reads,
            "warm_s": round(t_warm, 4),
            "warm_objects_read": warm_reads,
            "after_one_more_save_s": round(t_more, 4),
            "after_one_more_save_objects_read": more_reads,
            "log_only_s": round(t_log, 4),
            "stats_walk_s": round(t_stats, 4),
            "cold_over_stats": round(t_cold / t_stats, 2),
            "warm_over_log_only": round(t_warm / t_log, 2),
        }
        out["sessions_document_s"] = round(t_sessions, 4)

        commit = await sm.repository.read_commit((await sm.resolve("big")).commit)
        backend.reads = 0
        loader = Loader(backend)
        page, t_level = await timed(lambda: level(loader, commit.root, []))
        level_reads = backend.reads
        backend.reads = 0
        _, t_load = await timed(lambda: sm.load_session("big"))
        out["big_state"] = {
            "json_bytes": big_json,
            "first_level_s": round(t_level, 4),
            "first_level_objects_read": level_reads,
            "load_whole_s": round(t_load, 4),
            "load_whole_objects_read": backend.reads,
            "load_over_first_level": round(t_load / t_level, 1),
            "children": [f"{i.key}: {i.kind} {i.size}" for i in page.items],  # type: ignore[union-attr]
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--big-mb", type=int, default=50)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="castate-ui-", dir=args.dir))
    try:
        print(json.dumps(asyncio.run(run(args.steps, args.seed, args.big_mb, root)), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
