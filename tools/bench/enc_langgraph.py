"""CastateSaver on a plain store, on an encrypted store, and with LangGraph's
EncryptedSerializer, alternating in one process: time per step and where the encryption
time goes (issue 21).

    .bench-env/bin/python -m tools.bench.enc_langgraph --turns 150 --repeat 5 \\
        --out tools/bench/results/enc-langgraph-150.json

``langgraph_bench.py`` runs each checkpointer in its own process, one after the other, so on a
shared machine its wall times move with the load. Here the agent of ``langgraph_agent.py`` runs
``--repeat`` times on each saver in turn, in one process (round-robin, the order rotating
from repeat to repeat), each run on a fresh local store, durable, LangGraph durability
``sync``: wall and process CPU time per checkpoint, bytes on disk after closing, and (with the
counters of ``enc_profile.py``) the time spent in ``SealedBlobs``' sealing and in object ids.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

import castate
from tools.bench.enc_profile import Counters, instrument
from tools.bench.langgraph_agent import build, run_config, start
from tools.bench.langgraph_bench import _disk, _encrypted_serde
from tools.bench.systems.castate_enc import key

SYSTEMS = ("castate", "castate-enc", "castate-encserde")


def saver_for(name: str, root: Path) -> Any:
    from castate.integrations.langgraph import CastateSaver

    if name == "castate-enc":
        return CastateSaver(castate.open(str(root), durability="durable", create=True, key=key()))
    serde = _encrypted_serde() if name == "castate-encserde" else None
    return CastateSaver(castate.LocalBackend(root, durability="durable"), serde=serde)


def one_run(name: str, turns: int, words: int, base: Path) -> dict[str, Any]:
    root = base / name
    counters = Counters()
    undo = instrument(counters)
    counters.phase = "run"
    saver = saver_for(name, root)
    try:
        graph = build(saver)
        config = run_config("bench")
        c = time.process_time()
        t = time.perf_counter()
        graph.invoke(start(turns, words=words), config, durability="sync")
        wall = time.perf_counter() - t
        cpu = time.process_time() - c
        steps = len(list(saver.list(config)))
        counters.phase = "history"
        c = time.process_time()
        t = time.perf_counter()
        history = list(graph.get_state_history(config))
        history_wall = time.perf_counter() - t
        history_cpu = time.process_time() - c
        assert len(history) == steps
    finally:
        saver.close()
        for u in undo:
            u()
    disk = _disk(root)
    shutil.rmtree(root, ignore_errors=True)
    return {
        "steps": steps,
        "wall_ms_per_step": wall / steps * 1e3,
        "cpu_ms_per_step": cpu / steps * 1e3,
        "wall_ms_per_turn": wall / turns * 1e3,
        "history_wall_s": history_wall,
        "history_cpu_s": history_cpu,
        "disk_allocated": disk["allocated"],
        "disk_apparent": disk["apparent"],
        "crypto_ms": {ph: {k: v * 1e3 for k, v in d.items()} for ph, d in counters.seconds.items()},
        "crypto_calls": {ph: dict(d) for ph, d in counters.calls.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=150)
    ap.add_argument("--words", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    names = args.systems.split(",")
    base = Path(tempfile.mkdtemp(prefix="castate-enclg-", dir=args.dir))
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        for rep in range(args.repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                r = one_run(name, args.turns, args.words, base / str(rep))
                runs[name].append(r)
                print(
                    f"{rep} {name:18s} wall {r['wall_ms_per_step']:6.2f} ms/step, cpu {r['cpu_ms_per_step']:6.2f}, "
                    f"disk {r['disk_allocated'] / 1024:,.0f} KiB, history {r['history_wall_s']:.2f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    summary: dict[str, Any] = {}
    plain = runs.get("castate")
    for name, rs in runs.items():
        s: dict[str, Any] = {}
        for metric in ("wall_ms_per_step", "cpu_ms_per_step", "wall_ms_per_turn", "history_cpu_s", "disk_allocated"):
            s[metric] = spread([r[metric] for r in rs])
            if plain is not None:
                s[metric + "_over_castate"] = spread(
                    [r[metric] / p[metric] for r, p in zip(rs, plain, strict=True) if p[metric]]
                )
        summary[name] = s
    lines = [
        "| saver | disk KiB | vs castate | wall ms/step | cpu ms/step | cpu vs castate | history cpu s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():

        def cell(m: dict[str, float], spec: str) -> str:
            return f"{format(m['median'], spec)} ({format(m['min'], spec)}-{format(m['max'], spec)})"

        lines.append(
            f"| {name} | {s['disk_allocated']['median'] / 1024:,.0f} | "
            f"{cell(s.get('disk_allocated_over_castate', s['disk_allocated']), '.2f')} | "
            f"{cell(s['wall_ms_per_step'], '.2f')} | {cell(s['cpu_ms_per_step'], '.2f')} | "
            f"{cell(s.get('cpu_ms_per_step_over_castate', s['cpu_ms_per_step']), '.3f')} | "
            f"{cell(s['history_cpu_s'], '.2f')} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        report = {"params": vars(args), "summary": summary, "table": table, "runs": runs}
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
