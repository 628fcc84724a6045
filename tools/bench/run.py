"""Run the benchmark: every system over the same seeded workload, each in its own process.

    python -m tools.bench.run --steps 1000 --systems castate,castate-relaxed,naive,naive-nofsync \\
        --out tools/bench/results/run-<timestamp>.json
    python -m tools.bench.run --quick          # 50 steps, for CI

The parent computes the workload's calibration and ideal bytes, then starts one child per
system (``--child NAME``), in turn, each in a fresh directory; the child drives the
workload, times each checkpoint and writes its numbers to a JSON file. The parent prints
a markdown table of ratios and writes every number to ``--out``. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import blake3
import orjson

from tools.bench import systems
from tools.bench.workload import Workload, calibrate

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SYSTEMS = "castate,castate-relaxed,naive,naive-nofsync"
LAST = 10  # the "last steps" window for steady-state checkpoint time and the floor
RESTORES = 5
COLD_RESTORES = 5
MB = 1e6


# -- child: one system --------------------------------------------------------------------------


def _maxrss() -> int:
    """This process's peak resident set size in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _floor_once(state: dict[str, Any]) -> float:
    t = time.perf_counter()
    data = orjson.dumps(state)
    blake3.blake3(data).digest()
    return time.perf_counter() - t


def _dry_run(seed: int, steps: int, msg_scale: float, window: int | None) -> None:
    """Drive the workload without a system, mirroring the harness's own allocations.

    The peak RSS after this is the baseline: what the process needs without any system
    (the full-size state, the copy kept at the middle step, the floor's serialization, one
    decoded state standing in for a restored one).
    """
    w = Workload(seed, steps, msg_scale, window)
    mid = max(1, steps // 2)
    expected = None
    for n in range(1, steps + 1):
        w.step()
        if n == mid:
            expected = orjson.loads(orjson.dumps(w.state))
        if n >= steps - LAST:  # one warm-up pass, then the measured ones
            _floor_once(w.state)
    restored = orjson.loads(orjson.dumps(expected))
    del restored, expected, w
    gc.collect()


def _same_state(restored: Any, expected: Any) -> bool:
    """Equal as JSON values, types included (``==`` alone takes 1 == 1.0 == True)."""
    opt = orjson.OPT_SORT_KEYS
    return restored == expected and orjson.dumps(restored, option=opt) == orjson.dumps(expected, option=opt)


async def _child(
    name: str, seed: int, steps: int, msg_scale: float, window: int | None, store: Path, gc_first: bool = False
) -> dict[str, Any]:
    system = systems.make(name)
    rss_start = _maxrss()
    _dry_run(seed, steps, msg_scale, window)
    rss_baseline = _maxrss()

    w = Workload(seed, steps, msg_scale, window)
    if system.tracked:
        import castate

        w.state = castate.tracked(w.state)
    mid = max(1, steps // 2)
    times: list[float] = []
    cpu_times: list[float] = []  # process CPU time of each checkpoint (all threads): less moved by other load
    floors: list[float] = []
    await system.setup(store)
    handle = expected = expected_json = None
    t_run = time.perf_counter()
    for n in range(1, steps + 1):
        w.step()
        c = time.process_time()
        t = time.perf_counter()
        h = await system.checkpoint(w.state, n)
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
        if n == mid:
            handle = h
            expected_json = orjson.dumps(w.state)
            expected = orjson.loads(expected_json)
        if n == steps - LAST:
            _floor_once(w.state)  # warm-up: the first 10 MB serialization in a process faults in fresh pages
        elif n > steps - LAST:
            floors.append(_floor_once(w.state))
    run_seconds = time.perf_counter() - t_run
    final_state_bytes = len(orjson.dumps(w.state))
    stats = await system.stats()

    cold_times: list[float] = []
    restore_times: list[float] = []
    cold_cpu: list[float] = []
    warm_cpu: list[float] = []
    equal = key_order = True
    for n in range(COLD_RESTORES + RESTORES):
        cold = n < COLD_RESTORES
        if cold:
            await system.reopen()  # no in-process cache survives, as in a new process
        c = time.process_time()
        t = time.perf_counter()
        restored = await system.restore(handle)
        (cold_times if cold else restore_times).append(time.perf_counter() - t)
        (cold_cpu if cold else warm_cpu).append(time.process_time() - c)
        equal = equal and _same_state(restored, expected)
        key_order = key_order and orjson.dumps(restored) == expected_json
        del restored
    if gc_first:
        await system.maintain()
    await system.close()
    rss_peak = _maxrss()
    disk = system.disk()

    last = times[-LAST:]
    return {
        "system": name,
        "durable": system.durable,
        "steps": steps,
        "ok": equal,
        "restored_equal": equal,
        "restored_key_order_preserved": key_order,
        "final_state_bytes": final_state_bytes,
        "disk": disk,
        "stats": stats,
        "checkpoint_mean_s": statistics.fmean(times),
        "checkpoint_last_mean_s": statistics.fmean(last),
        "checkpoint_max_s": max(times),
        "checkpoint_times_s": times,
        "checkpoint_cpu_times_s": cpu_times,
        "floor_last_s": floors,
        "floor_mean_s": statistics.fmean(floors),
        "floor_median_s": statistics.median(floors),
        "checkpoint_last_median_s": statistics.median(last),
        "restore_step": mid,
        "restore_times_s": restore_times,
        "restore_median_s": statistics.median(restore_times),
        "restore_cold_times_s": cold_times,
        "restore_cold_s": statistics.median(cold_times),
        "restore_cpu_times_s": warm_cpu,
        "restore_cold_cpu_times_s": cold_cpu,
        "rss_start_bytes": rss_start,
        "rss_baseline_bytes": rss_baseline,
        "rss_peak_bytes": rss_peak,
        "peak_memory_bytes": max(0, rss_peak - rss_baseline),
        "run_seconds": run_seconds,
    }


def child_main(args: argparse.Namespace) -> int:
    result_path = Path(args.result)
    try:
        result = asyncio.run(
            _child(args.child, args.seed, args.steps, args.msg_scale, args.window, Path(args.store), args.gc)
        )
        rc = 0
    except Exception as exc:
        result = {"system": args.child, "ok": False, "error": repr(exc), "traceback": traceback.format_exc()}
        traceback.print_exc()
        rc = 1
    result_path.write_bytes(orjson.dumps(result))
    return rc


# -- parent: all systems --------------------------------------------------------------------


def run_system(name: str, args: argparse.Namespace, base: Path, root: Path = ROOT, label: str = "") -> dict[str, Any]:
    """One system in a child process, from the code tree ``root`` (``--base``: another checkout)."""
    label = label or name
    store = base / label
    result_file = base / f"{label}.result.json"
    cmd = [
        sys.executable,
        "-m",
        "tools.bench.run",
        "--child",
        name,
        "--seed",
        str(args.seed),
        "--steps",
        str(args.steps),
        "--msg-scale",
        str(args.msg_scale),
        *(["--window", str(args.window)] if args.window else []),
        *(["--gc"] if args.gc else []),
        "--store",
        str(store),
        "--result",
        str(result_file),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if result_file.exists():
        result = json.loads(result_file.read_text())
        result["system"] = label
    else:
        result = {"system": label, "ok": False, "error": f"child exited with {proc.returncode} and no result"}
    result["returncode"] = proc.returncode
    result["wall_seconds"] = wall
    if proc.returncode != 0:
        result["stderr"] = proc.stderr[-20_000:]
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    return result


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def table(report: dict[str, Any]) -> str:
    ideal = report["ideal"]["bytes"]
    floor = report["floor"]["seconds"]
    base = report["systems"].get("castate", {}).get("checkpoint_last_mean_s")
    head = (
        "| system | disk MB (alloc) | disk MB (apparent) | alloc / ideal | apparent / ideal | files | objects "
        "| ckpt mean ms | ckpt last-10 ms | last-10 / floor | last-10 vs castate | restore cold ms "
        "| restore warm ms | peak MB | restored ok |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for name, r in report["systems"].items():
        if "disk" not in r:
            lines.append(f"| {name} | FAILED: {r.get('error', '?')} |")
            continue
        alloc = r["disk"]["bytes_allocated"]
        appar = r["disk"]["bytes_apparent"]
        last = r["checkpoint_last_mean_s"]
        objects = r["stats"].get("objects")
        cells = [
            name,
            _fmt(alloc / MB, ".2f"),
            _fmt(appar / MB, ".2f"),
            _fmt(alloc / ideal, ".2f"),
            _fmt(appar / ideal, ".2f"),
            str(r["disk"]["files"]),
            "-" if objects is None else str(objects),
            _fmt(r["checkpoint_mean_s"] * 1e3, ".2f"),
            _fmt(last * 1e3, ".2f"),
            _fmt(last / floor if floor else None, ".2f"),
            _fmt(last / base if base else None, ".2f"),
            _fmt(r["restore_cold_s"] * 1e3, ".2f"),
            _fmt(r["restore_median_s"] * 1e3, ".2f"),
            _fmt(r["peak_memory_bytes"] / MB, ".1f"),
            "yes" if r["ok"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def parent_main(args: argparse.Namespace) -> int:
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    for name in names:
        if name not in systems.REGISTRY:
            raise SystemExit(f"unknown system {name!r}; known: {', '.join(systems.REGISTRY)}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "tools" / "bench" / "results" / f"run-{stamp}.json"

    cal = calibrate(args.seed, args.steps, args.msg_scale, args.window)
    print(
        f"workload: seed {args.seed}, {args.steps} steps, msg_scale {args.msg_scale}, window {args.window}: "
        f"final state {cal['final_state_bytes'] / MB:.2f} MB of JSON, {cal['messages']} messages, "
        f"{cal['tool_results']} tool results; new content {cal['new_content_bytes_per_step'] / 1e3:.2f} KB/step "
        f"(compresses {cal['new_content_compression_ratio']:.2f}x); ideal {cal['ideal_bytes'] / MB:.3f} MB",
        flush=True,
    )

    base = Path(tempfile.mkdtemp(prefix="castate-bench-", dir=args.dir))
    results: dict[str, Any] = {}
    try:
        runs = [(name, ROOT, name) for name in names]
        if args.base:  # each system from the other tree first, then from this one: side by side
            runs = [
                run for name in names for run in ((name, Path(args.base).resolve(), f"{name}@base"), (name, ROOT, name))
            ]
        for name, root, label in runs:
            print(f"running {label} ...", flush=True)
            r = run_system(name, args, base, root, label)
            results[label] = r
            name = label
            if "disk" in r:
                print(
                    f"  {name}: last-10 {r['checkpoint_last_mean_s'] * 1e3:.2f} ms, "
                    f"disk {r['disk']['bytes_allocated'] / MB:.2f} MB, restored ok: {r['ok']} "
                    f"({r['wall_seconds']:.1f} s)",
                    flush=True,
                )
            else:
                print(f"  {name} FAILED: {r.get('error')}\n{r.get('traceback') or r.get('stderr', '')}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    floors = [r["floor_mean_s"] for r in results.values() if "floor_mean_s" in r]
    report: dict[str, Any] = {
        "meta": {
            "command": [Path(sys.executable).name, "-m", "tools.bench.run", *sys.argv[1:]],
            "timestamp": stamp,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "base": args.base,
            "directory": str(base),
            "kept": bool(args.keep),
        },
        "params": {
            "seed": args.seed,
            "steps": args.steps,
            "msg_scale": args.msg_scale,
            "window": args.window,
            "gc": args.gc,
            "last": LAST,
        },
        "workload": cal,
        "ideal": {"bytes": cal["ideal_bytes"], "definition": "sum over steps of len(zstd3(orjson.dumps(new pieces)))"},
        "floor": {
            "seconds": statistics.median(floors) if floors else None,
            "per_system_s": {n: r["floor_mean_s"] for n, r in results.items() if "floor_mean_s" in r},
            "definition": f"orjson.dumps(state) + blake3 of those bytes, mean over the last {LAST} steps",
        },
        "systems": results,
    }
    report["table"] = table(report)
    ratios = {}
    castate_last = results.get("castate", {}).get("checkpoint_last_mean_s")
    for name, r in results.items():
        if "disk" not in r:
            continue
        ratios[name] = {
            "disk_allocated_over_ideal": r["disk"]["bytes_allocated"] / cal["ideal_bytes"],
            "disk_apparent_over_ideal": r["disk"]["bytes_apparent"] / cal["ideal_bytes"],
            "last_over_floor": r["checkpoint_last_mean_s"] / report["floor"]["seconds"],
            "last_over_castate": r["checkpoint_last_mean_s"] / castate_last if castate_last else None,
        }
    report["ratios"] = ratios

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    floor_ms = report["floor"]["seconds"]
    print()
    print(
        f"{args.steps} steps, seed {args.seed}; ideal {cal['ideal_bytes'] / MB:.3f} MB; "
        f"floor {'n/a' if floor_ms is None else f'{floor_ms * 1e3:.2f} ms'} "
        f"(orjson.dumps + blake3 of the {cal['final_state_bytes'] / MB:.2f} MB state)"
    )
    print()
    print(report["table"])
    print(f"\nwrote {out}")
    return 0 if all(r.get("ok") for r in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="50 steps (for CI)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--msg-scale", type=float, default=1.0, help="shrink message sizes (e.g. 0.1 for 10,000 steps)")
    ap.add_argument(
        "--gc", action="store_true", help="run castate gc (defaults) after the restores, before measuring disk"
    )
    ap.add_argument(
        "--window", type=int, default=None, help="keep only the last N messages and memory entries (a bounded context)"
    )
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated, from: {', '.join(systems.REGISTRY)}")
    ap.add_argument("--out", help="report path (default tools/bench/results/run-<timestamp>.json)")
    ap.add_argument("--dir", help="parent directory for the stores (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the stores after the run")
    ap.add_argument(
        "--base",
        help="also run every system from this checkout of another commit (as NAME@base, just before NAME): "
        "base and this tree side by side in one run",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = 50
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
