"""LangGraph checkpointers side by side: the same agent graph on castate and on SqliteSaver.

    python -m tools.bench.langgraph_bench --turns 225 --words 60 --repeat 3
    python -m tools.bench.langgraph_bench --quick        # 30 turns, one run each, for a smoke run

One child process per system runs the agent of ``langgraph_agent.py`` for ``--turns``
model turns on one thread (one checkpoint per node step), then reads the whole history
back. It reports the wall time per step, the time spent inside the checkpointer's
``put``/``put_writes`` per step, the bytes the store takes on disk after closing, and the
time to read the latest state and the whole history. Each system runs ``--repeat`` times,
round-robin; the parent prints a markdown table of the median runs, with ratios against
SqliteSaver, and writes every number to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("castate", "castate-relaxed", "sqlite", "memory")
# Encryption (issue 21): LangGraph's EncryptedSerializer (AES-EAX of every serialized value,
# pycryptodome) on castate and on SqliteSaver, against castate's own encrypted store.
ENC_SYSTEMS = ("castate-enc", "castate-encserde", "sqlite-encserde")
LANGGRAPH_AES_KEY = b"castate-bench-aes-key-32-bytes!!"  # 32 bytes: AES-256; a bench key, not a secret
KiB = 1024
MB = 1e6


def _disk(path: Path) -> dict[str, int]:
    files = apparent = allocated = 0
    for dirpath, _, names in os.walk(path):
        for f in names:
            st = os.stat(os.path.join(dirpath, f))
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"files": files, "apparent": apparent, "allocated": allocated}


def _open(name: str, store: Path) -> tuple[Any, Callable[[], None]]:
    """The checkpointer of system ``name`` on a fresh directory, and how to close it."""
    if name in ("castate", "castate-relaxed", "castate-encserde"):
        from castate import LocalBackend
        from castate.integrations.langgraph import CastateSaver

        durability = "relaxed" if name == "castate-relaxed" else "durable"
        serde = _encrypted_serde() if name == "castate-encserde" else None
        saver = CastateSaver(LocalBackend(store / "castate", durability=durability), serde=serde)
        return saver, saver.close
    if name == "castate-enc":
        import castate
        from castate.integrations.langgraph import CastateSaver
        from tools.bench.systems.castate_enc import key

        # castate's own encryption: a store created with a key (a RawKey: no scrypt at open)
        saver = CastateSaver(castate.open(str(store / "castate"), durability="durable", create=True, key=key()))
        return saver, saver.close
    if name in ("sqlite", "sqlite-encserde"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        store.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(store / "checkpoints.sqlite", check_same_thread=False)
        serde = _encrypted_serde() if name == "sqlite-encserde" else None
        return SqliteSaver(conn, serde=serde), conn.close
    if name == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver(), lambda: None
    raise SystemExit(f"unknown system {name!r}; known: {', '.join(SYSTEMS + ENC_SYSTEMS)}")


def _encrypted_serde() -> Any:
    """LangGraph's EncryptedSerializer as its docs set it up (AES in EAX mode, pycryptodome)."""
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    return EncryptedSerializer.from_pycryptodome_aes(key=LANGGRAPH_AES_KEY)


def _timed(saver: Any, method: str, sink: list[float]) -> None:
    """Wrap ``saver.<method>`` (on the instance) to record the seconds each call takes."""
    inner = getattr(saver, method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t)

    setattr(saver, method, wrapper)


def child(name: str, turns: int, words: int, durability: str, store: Path) -> dict[str, Any]:
    from tools.bench.langgraph_agent import build, run_config, start

    saver, close = _open(name, store)
    puts: list[float] = []
    writes: list[float] = []
    _timed(saver, "put", puts)
    _timed(saver, "put_writes", writes)
    graph = build(saver)
    config = run_config("bench")
    c = time.process_time()
    t = time.perf_counter()
    out = graph.invoke(start(turns, words=words), config, durability=durability)
    run_s = time.perf_counter() - t
    run_cpu_s = time.process_time() - c  # all threads: less moved by other load than the wall time
    steps = len(puts)

    t = time.perf_counter()
    latest = graph.get_state(config)
    latest_s = time.perf_counter() - t
    t = time.perf_counter()
    history = list(graph.get_state_history(config))
    history_s = time.perf_counter() - t
    ok = latest.values["messages"] == out["messages"] and len(history) == steps
    del history, latest
    close()
    disk = _disk(store) if name != "memory" else {"files": 0, "apparent": 0, "allocated": 0}
    return {
        "system": name,
        "ok": ok,
        "checkpoints": steps,
        "messages": len(out["messages"]),
        "run_s": run_s,
        "step_ms": run_s / steps * 1e3,
        "turn_ms": run_s / turns * 1e3,
        "cpu_step_ms": run_cpu_s / steps * 1e3,
        "put_ms": sum(puts) / len(puts) * 1e3,
        "put_last10_ms": sum(puts[-10:]) / len(puts[-10:]) * 1e3,
        "put_writes_ms": (sum(writes) / len(writes) * 1e3) if writes else 0.0,
        "saver_ms_per_step": (sum(puts) + sum(writes)) / steps * 1e3,
        "latest_ms": latest_s * 1e3,
        "history_s": history_s,
        "disk": disk,
    }


def _final_state_bytes(turns: int, words: int) -> int:
    """Size of the final state as LangGraph's own serializer writes it (one full copy)."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from tools.bench.langgraph_agent import build, run_config, start

    out = build(InMemorySaver()).invoke(start(turns, words=words), run_config("size"))
    return len(JsonPlusSerializer().dumps_typed(out["messages"])[1])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's repeats: the run with the median wall time per step, plus every run's numbers."""
    errors = [r for r in runs if "error" in r]
    if errors:
        return errors[0]
    ordered = sorted(runs, key=lambda r: r["step_ms"])
    median = dict(ordered[len(ordered) // 2])
    median["ok"] = all(r["ok"] for r in runs)
    median["repeats"] = [{k: v for k, v in r.items() if k != "system"} for r in runs]
    return median


def _table(results: list[dict[str, Any]], full_copy: int) -> str:
    peer = next((r for r in results if r["system"] == "sqlite" and "error" not in r), None)
    plain = next((r for r in results if r["system"] == "castate" and "error" not in r), None)

    def ratio(r: dict[str, Any], key: Callable[[dict[str, Any]], float], against: Any = peer) -> str:
        if against is None or not key(against):
            return "-"
        return f"{key(r) / key(against):.2f}x"

    def disk(x: dict[str, Any]) -> float:
        return float(x["disk"]["allocated"])

    rows = [
        "| system | disk MB (alloc) | disk KiB | vs sqlite | vs castate | disk / final state | step ms | vs sqlite "
        "| turn ms | cpu ms/step | saver ms/step | put ms (last 10) | latest ms | history s | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['system']} | error: {r['error'].splitlines()[-1]} |")
            continue
        alloc = r["disk"]["allocated"]
        rows.append(
            f"| {r['system']} | {alloc / MB:.2f} | {alloc / KiB:,.0f} | {ratio(r, disk)} | {ratio(r, disk, plain)} "
            f"| {alloc / full_copy:.1f}x | {r['step_ms']:.2f} | {ratio(r, lambda x: x['step_ms'])} "
            f"| {r.get('turn_ms', 0.0):.2f} | {r.get('cpu_step_ms', 0.0):.2f} "
            f"| {r['saver_ms_per_step']:.2f} | {r['put_last10_ms']:.2f} "
            f"| {r['latest_ms']:.1f} | {r['history_s']:.2f} | {r['ok']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=225, help="model turns (a tool step follows every third)")
    ap.add_argument("--words", type=int, default=60, help="words per model reply (tool results: 3x)")
    ap.add_argument("--durability", default="sync", choices=("sync", "async", "exit"))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--repeat", type=int, default=3, help="runs per system; the table shows the median")
    ap.add_argument("--quick", action="store_true", help="30 turns, one run per system")
    ap.add_argument("--dir", default=None, help="where the stores go (default: the temp dir)")
    ap.add_argument("--out", default=None, help="JSON report (default tools/bench/results/langgraph-<time>.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    turns = 30 if args.quick else args.turns
    if args.quick:
        args.repeat = 1

    if args.child:
        result = child(args.child, turns, args.words, args.durability, Path(args.store))
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    base = Path(tempfile.mkdtemp(prefix="castate-lgbench-", dir=args.dir))
    names = args.systems.split(",")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for rep in range(args.repeat):  # round-robin, so a slow spell of the machine hits every system
            for name in names:
                store = base / f"{name}-{rep}"
                cmd = [sys.executable, "-m", "tools.bench.langgraph_bench", "--child", name, "--store", str(store)]
                cmd += ["--turns", str(turns), "--words", str(args.words), "--durability", args.durability]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    runs[name].append({"system": name, "error": proc.stderr.strip() or f"exit {proc.returncode}"})
                else:
                    runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                shutil.rmtree(store, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = [_median_run(runs[name]) for name in names]

    full_copy = _final_state_bytes(turns, args.words)
    table = _table(results, full_copy)
    print(table)
    report = {
        "command": " ".join([Path(sys.executable).name, "-m", "tools.bench.langgraph_bench", *(argv or sys.argv[1:])]),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
        "turns": turns,
        "words": args.words,
        "durability": args.durability,
        "repeat": args.repeat,
        "final_messages_serialized_bytes": full_copy,
        "results": results,
        "table": table,
    }
    out = (
        Path(args.out)
        if args.out
        else ROOT / "tools/bench/results" / f"langgraph-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    return 0 if all("error" not in r and r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
