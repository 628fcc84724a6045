"""Maintenance costs on the benchmark workload: diff, forget + gc, fsck, export.

Builds one session of the agent workload (``workload.py``) with a checkpoint every step in a
fresh local store, then measures, in the same run:

- ``diff`` of the last two checkpoints and of the first and last, against loading both
  states and comparing them with ``==`` (what one does without a structural diff): time and
  objects read;
- ``forget --keep-last 10`` then ``gc --grace 0 --reflog-expire 0``: objects and bytes freed;
- ``fsck`` quick and full, and ``export`` of the session.

    python -m tools.bench.maintenance --steps 1000
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
from tools.bench.common import CountingLocal, timed
from tools.bench.workload import Workload


async def run(steps: int, seed: int, root: Path) -> dict[str, Any]:
    store = root / "store"
    work = Workload(seed, steps)
    async with castate.StateManager(castate.FileStorageBackend(store, durability="relaxed")) as sm:
        cps = []
        for _ in range(steps):
            work.step()
            await sm.save_session("bench", work.state)
            cps.append(await sm.create_checkpoint("bench", f"step-{len(cps) + 1}"))
    out: dict[str, Any] = {"steps": steps, "seed": seed}
    for label, a, b in (("last_two", cps[-2], cps[-1]), ("first_last", cps[0], cps[-1])):
        backend = CountingLocal(store)
        sm = castate.StateManager(backend)
        await sm.repository.open()
        changes, t_diff = await timed(lambda a=a, b=b, sm=sm: sm.diff(a, b))
        diff_reads = backend.reads
        backend.reads = 0

        async def load_both(a: str = a, b: str = b, sm: castate.StateManager = sm) -> bool:
            return await sm.restore_checkpoint(a) == await sm.restore_checkpoint(b)

        _, t_load = await timed(load_both)
        out[f"diff_{label}"] = {
            "changes": len(changes),
            "diff_s": round(t_diff, 4),
            "diff_objects_read": diff_reads,
            "load_and_compare_s": round(t_load, 4),
            "load_objects_read": backend.reads,
            "load_over_diff": round(t_load / t_diff, 2),
        }
        await sm.close()
    async with castate.StateManager(castate.LocalBackend(store)) as sm:
        forgot, t_forget = await timed(lambda: sm.forget(castate.RetentionPolicy(last=10, keep_named=False)))
        gc, t_gc = await timed(lambda: sm.gc(grace=0, reflog_expire=0))
        quick, t_quick = await timed(lambda: sm.fsck())
        full, t_full = await timed(lambda: sm.fsck(full=True))
        bundle, t_export = await timed(lambda: sm.export_session("bench", root / "bench.castate"))
        out["forget"] = {"refs_removed": forgot.refs_removed, "s": round(t_forget, 4)}
        out["gc"] = {
            "objects": gc.objects,
            "deleted": gc.deleted,
            "deleted_bytes": gc.deleted_bytes,
            "disk_before": gc.store_bytes_before,
            "disk_after": gc.store_bytes_after,
            "s": round(t_gc, 4),
        }
        out["fsck"] = {
            "ok": quick.ok and full.ok,
            "objects": quick.reachable,
            "quick_s": round(t_quick, 4),
            "full_s": round(t_full, 4),
        }
        out["export"] = {"objects": bundle.objects, "bytes": bundle.bytes, "s": round(t_export, 4)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="castate-maint-", dir=args.dir))
    try:
        print(json.dumps(asyncio.run(run(args.steps, args.seed, root)), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
