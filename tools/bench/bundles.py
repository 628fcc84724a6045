"""Export and import between plain and encrypted stores, side by side in one run.

Builds one session of the agent workload (``workload.py``, a checkpoint every ``--every``
steps) in a plain local store and the same session in an encrypted one (a raw key, so the
numbers hold no scrypt), exports each, then imports every bundle into fresh stores of each
kind, ``--rounds`` times, the cases interleaved within a round. Reports medians with
ranges, and ratios against plain -> plain (today's path: no decryption, no translation).

    python -m tools.bench.bundles --steps 300 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import castate
from castate.keys import RawKey
from castate.repository.bundle import export_session, import_bundle
from tools.bench.workload import Workload

KEY_A = RawKey("a" * 32)
KEY_B = RawKey("b" * 32)


def store(path: Path, kind: str) -> castate.StateManager:
    key = {"plain": None, "encrypted": KEY_A, "encrypted-other": KEY_B}[kind]
    return castate.StateManager(castate.open(str(path), key=key, durability="relaxed"))


async def build(path: Path, kind: str, steps: int, every: int, seed: int) -> None:
    work = Workload(seed, steps)
    async with store(path, kind) as sm:
        for i in range(steps):
            work.step()
            await sm.save_session("bench", work.state)
            if (i + 1) % every == 0:
                await sm.create_checkpoint("bench", f"step-{i + 1}")


def summary(times: list[float], base: list[float] | None) -> dict[str, Any]:
    med = statistics.median(times)
    out: dict[str, Any] = {"median_s": round(med, 4), "range_s": [round(min(times), 4), round(max(times), 4)]}
    if base is not None:
        out["ratio"] = round(med / statistics.median(base), 2)
    return out


async def run(steps: int, every: int, rounds: int, seed: int, root: Path) -> dict[str, Any]:
    for kind in ("plain", "encrypted"):
        await build(root / kind, kind, steps, every, seed)
    exports: dict[str, list[float]] = {"plain": [], "encrypted": []}
    sizes: dict[str, int] = {}
    objects: dict[str, int] = {}  # the two stores' trees differ a little: runs are cut where ids fall
    cases = [
        ("plain", "plain"),
        ("plain", "encrypted"),
        ("encrypted", "plain"),
        ("encrypted", "encrypted-other"),
        ("encrypted", "encrypted"),
    ]
    imports: dict[str, list[float]] = {f"{a} -> {b}": [] for a, b in cases}
    for r in range(rounds):
        for kind in ("plain", "encrypted"):
            async with store(root / kind, kind) as sm:
                t = time.perf_counter()
                report = await export_session(sm.repository, "bench", root / f"{kind}.castate")
                exports[kind].append(time.perf_counter() - t)
                sizes[kind], objects[kind] = report.bytes, report.objects
        for a, b in cases:
            dst = root / f"dst-{r}-{a}-{b}"
            if (a, b) == ("encrypted", "encrypted"):
                shutil.copytree(root / "encrypted", dst)  # back into a copy of its own store: no translation
            async with store(dst, b) as sm:
                await sm.repository.open(create=True)
                t = time.perf_counter()
                got = await import_bundle(
                    sm.repository, root / f"{a}.castate", session_id="imported", key=KEY_A if a != "plain" else None
                )
                imports[f"{a} -> {b}"].append(time.perf_counter() - t)
                assert got.objects == objects[a]
            shutil.rmtree(dst)
    base_import = imports["plain -> plain"]
    return {
        "steps": steps,
        "checkpoint_every": every,
        "rounds": rounds,
        "bundle_objects": objects,
        "bundle_bytes": sizes,
        "export": {k: summary(v, exports["plain"]) for k, v in exports.items()},
        "import": {k: summary(v, base_import) for k, v in imports.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="castate-bundles-", dir=args.dir))
    try:
        print(json.dumps(asyncio.run(run(args.steps, args.every, args.rounds, args.seed, root)), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
