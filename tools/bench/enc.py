"""Encrypted against plain castate, side by side in one run (issue 21's targets).

    python -m tools.bench.enc --steps 1000 --repeat 3 \\
        --pairs castate,castate-sqlite --out tools/bench/results/enc-1000.json

For each pair (a plain system and its ``-enc`` twin of ``systems/castate_enc.py``: the same
steps on a store created with a ``castate.RawKey``) this runs both through
``tools.bench.run``'s child, ``--repeat`` times, round-robin, alternating which of the two
goes first, so a slow spell of the shared machine hits both. Every ratio is encrypted over
plain *within one repeat*; the table shows the median of the repeats and the range.

Columns: disk (allocated bytes after close; apparent bytes in the JSON), save (the timed
``save_session`` + ``create_checkpoint`` of every step: the median over all steps and the
mean of the last 10), restore cold (median of 5, each right after reopening the store, which
for an encrypted store includes reading its key slot and deriving its keys) and warm
(median of 5 without reopening). Targets: disk <= 1.1x, save and restore <= 1.3x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from tools.bench import systems
from tools.bench.run import ROOT, _git_commit, run_system
from tools.bench.workload import calibrate

MB = 1e6

# metric name -> (how to read it from a run.py child result, unit scale, target ratio)
METRICS: dict[str, tuple[Any, float, float]] = {
    "disk MB": (lambda r: r["disk"]["bytes_allocated"], 1e-6, 1.1),
    "disk apparent MB": (lambda r: r["disk"]["bytes_apparent"], 1e-6, 1.1),
    "save median ms": (lambda r: statistics.median(r["checkpoint_times_s"]), 1e3, 1.3),
    "save last-10 ms": (lambda r: r["checkpoint_last_mean_s"], 1e3, 1.3),
    "save mean ms": (lambda r: r["checkpoint_mean_s"], 1e3, 1.3),
    "restore cold ms": (lambda r: r["restore_cold_s"], 1e3, 1.3),
    "restore warm ms": (lambda r: r["restore_median_s"], 1e3, 1.3),
    # process CPU time (all threads), less moved by other load on a shared machine than wall time
    "save cpu median ms": (lambda r: statistics.median(r["checkpoint_cpu_times_s"]), 1e3, 1.3),
    "save cpu last-10 ms": (lambda r: statistics.fmean(r["checkpoint_cpu_times_s"][-10:]), 1e3, 1.3),
    "restore cold cpu ms": (lambda r: statistics.median(r["restore_cold_cpu_times_s"]), 1e3, 1.3),
    "restore warm cpu ms": (lambda r: statistics.median(r["restore_cpu_times_s"]), 1e3, 1.3),
}
TABLE = (
    "disk MB",
    "save median ms",
    "save last-10 ms",
    "restore cold ms",
    "restore warm ms",
    "save cpu median ms",
    "restore cold cpu ms",
    "restore warm cpu ms",
)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _cell(s: dict[str, float], spec: str) -> str:
    if s["min"] == s["max"]:
        return format(s["median"], spec)
    return f"{format(s['median'], spec)} ({format(s['min'], spec)}-{format(s['max'], spec)})"


def summarize(plain: list[dict[str, Any]], enc: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and ranges of each metric for both systems, and of the per-repeat ratios."""
    out: dict[str, Any] = {}
    pairs = [(p, e) for p, e in zip(plain, enc, strict=True) if "disk" in p and "disk" in e]
    if not pairs:
        return out
    for metric, (get, scale, target) in METRICS.items():
        pv = [get(p) * scale for p, _ in pairs]
        ev = [get(e) * scale for _, e in pairs]
        ratios = [e / p for p, e in zip(pv, ev, strict=True)]
        out[metric] = {
            "plain": _spread(pv),
            "encrypted": _spread(ev),
            "ratio": _spread(ratios),
            "target": target,
            "met": statistics.median(ratios) <= target,
            "plain_runs": pv,
            "encrypted_runs": ev,
            "ratio_runs": ratios,
        }
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| backend | metric | plain | encrypted | encrypted / plain | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, s in summary.items():
        if not s:
            lines.append(f"| {pair} | FAILED | | | | | |")
            continue
        for metric in TABLE:
            m = s[metric]
            spec = ".2f" if "MB" in metric else ".1f"
            lines.append(
                f"| {pair} | {metric} | {_cell(m['plain'], spec)} | {_cell(m['encrypted'], spec)} "
                f"| {_cell(m['ratio'], '.3f')} | <= {m['target']} | {'yes' if m['met'] else 'NO'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--msg-scale", type=float, default=1.0)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--pairs",
        default="castate,castate-sqlite",
        help="plain systems, each run beside its -enc twin (castate, castate-relaxed, castate-tracked, "
        "castate-sqlite, castate-postgres, castate-redis)",
    )
    ap.add_argument("--gc", action="store_true", help="castate gc after the restores, before the disk is measured")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    plains = [p.strip() for p in args.pairs.split(",") if p.strip()]
    for p in plains:
        for name in (p, p + "-enc"):
            if name not in systems.REGISTRY:
                raise SystemExit(f"unknown system {name!r}")

    cal = calibrate(args.seed, args.steps, args.msg_scale, args.window)
    print(
        f"workload: seed {args.seed}, {args.steps} steps: final state {cal['final_state_bytes'] / MB:.2f} MB, "
        f"ideal {cal['ideal_bytes'] / MB:.3f} MB",
        flush=True,
    )
    base = Path(tempfile.mkdtemp(prefix="castate-encbench-", dir=args.dir))
    runs: dict[str, list[dict[str, Any]]] = {n: [] for p in plains for n in (p, p + "-enc")}
    try:
        for rep in range(args.repeat):
            for p in plains:
                order = (p, p + "-enc") if rep % 2 == 0 else (p + "-enc", p)
                for name in order:
                    label = f"{name}-{rep}"
                    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] repeat {rep + 1}: {name} ...", flush=True)
                    r = run_system(name, args, base, ROOT, label)
                    r["system"] = name
                    r["repeat"] = rep
                    runs[name].append(r)
                    if "disk" in r:
                        print(
                            f"  disk {r['disk']['bytes_allocated'] / MB:.3f} MB, "
                            f"save median {statistics.median(r['checkpoint_times_s']) * 1e3:.2f} ms, "
                            f"last-10 {r['checkpoint_last_mean_s'] * 1e3:.2f} ms, "
                            f"cold {r['restore_cold_s'] * 1e3:.1f} ms, warm {r['restore_median_s'] * 1e3:.1f} ms, "
                            f"ok {r['ok']}",
                            flush=True,
                        )
                    else:
                        print(f"  FAILED: {r.get('error')}\n{r.get('traceback') or r.get('stderr', '')}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    summary = {p: summarize(runs[p], runs[p + "-enc"]) for p in plains}
    text = table(summary)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "meta": {
            "command": [
                Path(sys.executable).name,
                "-m",
                "tools.bench.enc",
                *(argv if argv is not None else sys.argv[1:]),
            ],
            "timestamp": stamp,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "key": "castate.RawKey (HKDF-SHA256 at open; no scrypt)",
        },
        "params": {
            "seed": args.seed,
            "steps": args.steps,
            "msg_scale": args.msg_scale,
            "window": args.window,
            "repeat": args.repeat,
            "gc": args.gc,
        },
        "workload": cal,
        "summary": summary,
        "table": text,
        # every child's numbers, per-step times included
        "runs": runs,
    }
    out = Path(args.out) if args.out else ROOT / "tools/bench/results" / f"enc-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    print(text)
    print(f"\nwrote {out}")
    ok = all(r.get("ok") for rs in runs.values() for r in rs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
