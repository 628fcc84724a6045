"""History independence (issue target 3): the same bounded-state session saved 1,000 and
20,000 times, then opened and restored by fresh processes.

    python -m tools.bench.history                                # local and SQLite, 1,000 vs 20,000
    python -m tools.bench.history --saves 500,5000 --systems sqlite --out /tmp/h.json
    python -m tools.bench.history --systems sqlite --gc --base /tmp/base   # also after `castate gc`,
                                      # and restored by another checkout's code, alternating

The session keeps the last ``--window`` messages and agent-memory entries (the workload's
bounded context, ``Workload(window=...)``). Each save is ``save_session`` then a named
``create_checkpoint``, durable. For each store, ``--runs`` fresh Python processes each open
it, restore the checkpoint of the middle save and report their time and peak RSS
(``VmHWM``). Reported per system: medians with ranges, and the ratio of the long
history to the short one, which the target wants at most 1.2x, with the peak at most
2x the state + 48 MB.

The CPU time of each restoring process (all its threads) is reported next to its wall
time: on a shared machine it moves far less.

``--gc`` then runs a routine gc (``StateManager.gc()`` with its defaults: nothing is
deleted here, every save has a checkpoint; the pack store regroups its chains) and
measures the restores again. ``--base DIR`` names a checkout of other code (``git archive
<commit> | tar -x -C DIR``): its restores of the same stores alternate with this tree's, one
each in turn, so the two are compared in one run on the same files.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
SESSION = "bench"
LAST = 100  # saves whose times make the "durable save" figure


def _url(system: str, directory: Path) -> str:
    if system == "local":
        return str(directory / "store")
    if system == "sqlite":
        return f"sqlite:///{directory / 'state.db'}"
    raise SystemExit(f"unknown system {system!r} (local, sqlite)")


async def build(url: str, saves: int, window: int, seed: int) -> dict[str, Any]:
    """Save the session ``saves`` times; the checkpoint id of the middle save and save times."""
    import castate
    from tools.bench.workload import Workload

    w = Workload(seed, saves, 1.0, window)
    sm = castate.StateManager(url)
    times: list[float] = []
    mid = max(1, saves // 2)
    handle = ""
    try:
        for n in range(1, saves + 1):
            w.step()
            t = time.perf_counter()
            await sm.save_session(SESSION, w.state)
            cp = await sm.create_checkpoint(SESSION, f"step-{n:06d}")
            times.append(time.perf_counter() - t)
            if n == mid:
                handle = cp
                state_bytes = len(orjson.dumps(w.state))
    finally:
        await sm.close()
    last = times[-LAST:]
    return {
        "checkpoint": handle,
        "state_bytes": state_bytes,
        "save_median_s": statistics.median(last),
        "save_min_s": min(last),
        "save_max_s": max(last),
    }


async def restore_once(url: str, checkpoint: str) -> dict[str, Any]:
    import castate

    t = time.perf_counter()
    cpu = time.process_time()
    sm = castate.StateManager(url)
    state = await sm.restore_checkpoint(checkpoint)
    seconds = time.perf_counter() - t
    cpu = time.process_time() - cpu  # every thread's: what a loaded machine does not inflate
    await sm.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_peak_bytes": _peak_rss(),
        "state_bytes": len(orjson.dumps(state)),
    }


def _peak_rss() -> int:
    """This process's peak RSS: VmHWM, which starts anew at exec (ru_maxrss on Linux keeps the
    parent's peak across fork and exec, so the building parent's would show here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _fresh(url: str, checkpoint: str, tree: Path = ROOT) -> dict[str, Any]:
    """One restore in a new process, with the code of ``tree`` (its ``castate`` package comes
    first on the path: the process runs from there)."""
    out = subprocess.run(
        [sys.executable, "-c", _RESTORE, str(ROOT), url, checkpoint],
        cwd=tree, check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# Runs in ``tree`` (castate from there), with this file's helpers from ROOT.
_RESTORE = """
import asyncio, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("history", sys.argv[1] + "/tools/bench/history.py")
history = importlib.util.module_from_spec(spec)
spec.loader.exec_module(history)
print(json.dumps(asyncio.run(history.restore_once(sys.argv[2], sys.argv[3]))))
"""


def _restores(url: str, checkpoint: str, runs: int, base: Path | None, base_url: str | None = None) -> dict[str, Any]:
    """``runs`` fresh restores with this tree's code, alternating with ``base``'s (of
    ``base_url``, the same store unless given)."""
    _fresh(url, checkpoint)  # warm the page cache: every run below reads the same files
    if base is not None:
        _fresh(base_url or url, checkpoint, base)
    mine: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for _ in range(runs):
        if base is not None:
            other.append(_fresh(base_url or url, checkpoint, base))
        mine.append(_fresh(url, checkpoint))
    out: dict[str, Any] = {
        "open_restore_s": _spread([r["seconds"] for r in mine]),
        "open_restore_cpu_s": _spread([r["cpu_seconds"] for r in mine]),
        "rss_peak_bytes": _spread([r["rss_peak_bytes"] for r in mine]),
        "restored_state_bytes": mine[0]["state_bytes"],
    }
    if other:
        out["base"] = {
            "open_restore_s": _spread([r["seconds"] for r in other]),
            "open_restore_cpu_s": _spread([r.get("cpu_seconds", float("nan")) for r in other]),
            "rss_peak_bytes": _spread([r["rss_peak_bytes"] for r in other]),
        }
    return out


def _gc_in(tree: Path, url: str) -> dict[str, Any]:
    """A routine gc of ``url`` in a new process, with the code of ``tree``."""
    out = subprocess.run(
        [sys.executable, "-c", _GC, str(ROOT), url], cwd=tree, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


_GC = _RESTORE.replace("history.restore_once(sys.argv[2], sys.argv[3])", "history.gc_once(sys.argv[2])")


async def gc_once(url: str) -> dict[str, Any]:
    import castate

    sm = castate.StateManager(url)
    t = time.perf_counter()
    try:
        report = await sm.gc()
    finally:
        await sm.close()
    return {
        "gc_s": time.perf_counter() - t,
        "deleted": report.deleted,
        "store_bytes_before": report.store_bytes_before,
        "store_bytes_after": report.store_bytes_after,
    }


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def measure(system: str, saves: int, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix=f"{system}-{saves}-", dir=base))
    url = _url(system, directory)
    print(f"== {system}: {saves} saves", file=sys.stderr, flush=True)
    built = asyncio.run(build(url, saves, args.window, args.seed))
    base = Path(args.base).resolve() if args.base else None
    out = {**built, **_restores(url, built["checkpoint"], args.runs, base)}
    if args.gc:
        print(f"== {system}: {saves} saves, gc", file=sys.stderr, flush=True)
        base_url = None
        if base is not None:  # each code gcs its own copy of the store
            copy = directory.with_name(directory.name + "-base")
            shutil.copytree(directory, copy)
            base_url = _url(system, copy)
            base_gc = _gc_in(base, base_url)
        out["after_gc"] = {
            **_gc_in(ROOT, url),
            **_restores(url, built["checkpoint"], args.runs, base, base_url),
        }
        if base is not None:
            out["after_gc"]["base"].update(base_gc)
    return out


def table(report: dict[str, Any]) -> str:
    lines = [
        "Medians (ranges). CPU: every thread of the restoring process, which load on the machine inflates less.",
        "",
        "| system | saves | open+restore ms | its CPU ms | durable save ms | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for system, by_saves in report["systems"].items():
        sizes = sorted(by_saves, key=int)
        for label, pick in _VARIANTS:
            rows = {saves: pick(by_saves[saves]) for saves in sizes}
            if any(r is None for r in rows.values()):
                continue
            name = f"{system}{label}"
            for saves in sizes:
                r, o, rss = by_saves[saves], rows[saves]["open_restore_s"], rows[saves]["rss_peak_bytes"]
                c = rows[saves]["open_restore_cpu_s"]
                lines.append(
                    f"| {name} | {int(saves):,} | {o['median'] * 1e3:.1f} ({o['min'] * 1e3:.1f}-{o['max'] * 1e3:.1f}) "
                    f"| {c['median'] * 1e3:.1f} ({c['min'] * 1e3:.1f}-{c['max'] * 1e3:.1f}) "
                    f"| {r['save_median_s'] * 1e3:.2f} ({r['save_min_s'] * 1e3:.2f}-{r['save_max_s'] * 1e3:.2f}) "
                    f"| {rss['median'] / 1e6:.1f} ({rss['min'] / 1e6:.1f}-{rss['max'] / 1e6:.1f}) |"
                )
            if len(sizes) == 2:
                a, b = rows[sizes[0]], rows[sizes[1]]
                lines.append(
                    f"| {name} | ratio | {b['open_restore_s']['median'] / a['open_restore_s']['median']:.2f}x "
                    f"| {b['open_restore_cpu_s']['median'] / a['open_restore_cpu_s']['median']:.2f}x "
                    f"| {by_saves[sizes[1]]['save_median_s'] / by_saves[sizes[0]]['save_median_s']:.2f}x "
                    f"| {b['rss_peak_bytes']['median'] / a['rss_peak_bytes']['median']:.2f}x "
                    f"(limit 2x state + 48 MB: {(2 * by_saves[sizes[1]]['state_bytes'] + 48e6) / 1e6:.0f} MB) |"
                )
    return "\n".join(lines)


_VARIANTS: list[tuple[str, Any]] = [
    ("", lambda r: r),
    (" (base)", lambda r: r.get("base")),
    (" after gc", lambda r: r.get("after_gc")),
    (" after gc (base)", lambda r: (r.get("after_gc") or {}).get("base")),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saves", default="1000,20000")
    ap.add_argument("--systems", default="local,sqlite")
    ap.add_argument("--window", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=5, help="fresh restoring processes per store")
    ap.add_argument("--dir", help="parent directory for the stores (default: the system temp dir)")
    ap.add_argument("--gc", action="store_true", help="also restore after a routine gc")
    ap.add_argument("--base", help="a checkout of other code whose restores alternate with this tree's")
    ap.add_argument("--out")
    ap.add_argument("--restore", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.restore:
        print(json.dumps(asyncio.run(restore_once(*args.restore))))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        systems = {
            system: {saves: measure(system, int(saves), args, Path(base)) for saves in args.saves.split(",")}
            for system in args.systems.split(",")
        }
    report = {
        "meta": {
            "command": ["python", "-m", "tools.bench.history", *(argv if argv is not None else sys.argv[1:])],
            "timestamp": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
            "git_commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "params": {"window": args.window, "seed": args.seed, "runs": args.runs, "gc": args.gc, "base": args.base},
        "systems": systems,
    }
    text = table(report)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
