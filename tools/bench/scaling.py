"""The scaling table: checkpoint time and disk at 100, 1,000 and 10,000 steps, in one command.

    python -m tools.bench.scaling                        # castate and castate-tracked
    python -m tools.bench.scaling --systems castate --out tools/bench/results/scaling.json

Each size is one ``tools.bench.run`` (each system in its own process). The 10,000-step run
uses messages a tenth of the size (``--msg-scale 0.1``) so that it finishes in minutes and
its state stays near the 1,000-step one, which makes the per-step cost of a long history
visible: a checkpoint should cost about the same at step 10,000 as at step 1,000.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SIZES = ((100, 1.0), (1000, 1.0), (10000, 0.1))


def run_one(steps: int, scale: float, systems: str, directory: str | None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [
        sys.executable,
        "-m",
        "tools.bench.run",
        "--steps",
        str(steps),
        "--msg-scale",
        str(scale),
        "--systems",
        systems,
        "--out",
        str(out),
    ]
    if directory:
        cmd += ["--dir", directory]
    subprocess.run(cmd, cwd=ROOT, check=True)
    report: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return report


def table(reports: list[dict[str, Any]]) -> str:
    head = (
        "| steps | msg scale | state MB | ideal MB | floor ms | system | disk MB (alloc) | disk / ideal "
        "| ckpt median ms | ckpt last-10 ms | last-10 / floor |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for rep in reports:
        p, floor, ideal = rep["params"], rep["floor"]["seconds"], rep["ideal"]["bytes"]
        for name, r in rep["systems"].items():
            if "disk" not in r:
                lines.append(f"| {p['steps']} | {p['msg_scale']} | | | | {name} | FAILED | | | | |")
                continue
            times = sorted(r["checkpoint_times_s"])
            cells = [
                str(p["steps"]),
                str(p["msg_scale"]),
                f"{rep['workload']['final_state_bytes'] / 1e6:.2f}",
                f"{ideal / 1e6:.3f}",
                f"{floor * 1e3:.2f}",
                name,
                f"{r['disk']['bytes_allocated'] / 1e6:.2f}",
                f"{r['disk']['bytes_allocated'] / ideal:.2f}",
                f"{times[len(times) // 2] * 1e3:.2f}",
                f"{r['checkpoint_last_mean_s'] * 1e3:.2f}",
                f"{r['checkpoint_last_mean_s'] / floor:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="castate's checkpoint time and disk at 100, 1,000 and 10,000 steps.")
    ap.add_argument("--systems", default="castate,castate-tracked")
    ap.add_argument("--dir", help="parent directory for the stores")
    ap.add_argument("--out", help="report path (default tools/bench/results/scaling-<timestamp>.json)")
    args = ap.parse_args()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "tools" / "bench" / "results" / f"scaling-{stamp}.json"
    reports = [run_one(steps, scale, args.systems, args.dir) for steps, scale in SIZES]
    text = table(reports)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"timestamp": stamp, "runs": reports, "table": text}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
