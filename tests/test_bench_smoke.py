"""Smoke test of the benchmark harness (tools/bench): a short run, real checks, no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson

from tools.bench.ideal import Ideal
from tools.bench.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30


def run_bench(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``python -m tools.bench.<module> args`` from the repository root; it must succeed."""
    cmd = [sys.executable, "-m", f"tools.bench.{module}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_workload_is_deterministic_and_aliases_messages():
    a, b = Workload(7, STEPS), Workload(7, STEPS)
    for _ in range(STEPS):
        assert orjson.dumps(a.step()) == orjson.dumps(b.step())
    assert orjson.dumps(a.state) == orjson.dumps(b.state)
    assert orjson.dumps(Workload(8, STEPS).state) != orjson.dumps(Workload(7, STEPS).state)
    state = a.state
    assert state["step"] == STEPS
    assert state["status"] == "done"
    in_memory = {id(m) for agent in state["agents"].values() for m in agent["memory"]}
    chat = [m for m in state["messages"] if m["role"] != "tool"]
    assert all(id(m) in in_memory for m in chat)  # the same dict objects, not copies
    try:
        a.step()
    except RuntimeError:
        pass
    else:
        raise AssertionError("stepping past the end must fail")


def test_ideal_counts_each_step():
    w = Workload(0, STEPS)
    ideal = Ideal(w.state)
    for _ in range(STEPS):
        ideal.add(w.step())
    assert len(ideal.per_step) == STEPS
    assert all(n > 0 for n in ideal.per_step)
    assert ideal.total == ideal.initial + sum(ideal.per_step)
    assert ideal.total < len(orjson.dumps(w.state))


def test_bench_run_castate_and_naive(tmp_path):
    out = tmp_path / "report.json"
    run_bench(
        "run",
        "--steps",
        str(STEPS),
        "--systems",
        "castate,naive",
        "--out",
        str(out),
        "--dir",
        str(tmp_path),
        timeout=120,
    )
    report = json.loads(out.read_text())
    for key in ("meta", "params", "workload", "ideal", "floor", "systems", "ratios", "table"):
        assert key in report
    assert report["params"]["steps"] == STEPS
    assert report["ideal"]["bytes"] > 0
    assert report["floor"]["seconds"] > 0
    assert set(report["systems"]) == {"castate", "naive"}
    for name, r in report["systems"].items():
        assert r["ok"], (name, r.get("traceback"))
        assert r["restored_equal"]
        assert r["restore_step"] == STEPS // 2
        assert len(r["checkpoint_times_s"]) == STEPS
        assert len(r["restore_times_s"]) == 5
        assert r["final_state_bytes"] == report["workload"]["final_state_bytes"]
        for field in ("files", "bytes_apparent", "bytes_allocated"):
            assert r["disk"][field] > 0
        assert set(report["ratios"][name]) >= {"disk_allocated_over_ideal", "last_over_floor", "last_over_castate"}
    castate, naive = report["systems"]["castate"], report["systems"]["naive"]
    assert castate["stats"]["objects"] > 0
    assert naive["disk"]["files"] == STEPS
    assert castate["disk"]["bytes_apparent"] < naive["disk"]["bytes_apparent"]
    assert castate["disk"]["bytes_allocated"] < naive["disk"]["bytes_allocated"]
    assert "| castate |" in report["table"]
    assert not list(tmp_path.glob("castate-bench-*")), "the stores must be removed after the run"


def test_bench_runs_the_database_backends(tmp_path):
    """The SQLite, PostgreSQL and Redis bench systems run (starting their own servers) and restore exactly."""
    out = tmp_path / "report.json"
    names = "castate-sqlite,castate-postgres,castate-redis"
    run_bench("run", "--steps", "10", "--systems", names, "--out", str(out), "--dir", str(tmp_path), timeout=180)
    report = json.loads(out.read_text())
    for name in names.split(","):
        r = report["systems"][name]
        assert r["ok"], (name, r.get("traceback"))
        assert r["stats"]["objects"] > 0
        assert r["disk"]["bytes_apparent"] > 0
        assert len(r["checkpoint_times_s"]) == 10


def test_bench_ui_runs(tmp_path):
    proc = run_bench("ui", "--steps", "20", "--big-mb", "1", "--dir", str(tmp_path))
    out = json.loads(proc.stdout)
    t = out["timeline"]
    assert t["saves"] == 20
    assert t["cold_objects_read"] > 0
    assert t["warm_objects_read"] == 0  # cached per commit
    assert 0 < t["after_one_more_save_objects_read"] < t["cold_objects_read"]
    big = out["big_state"]
    assert big["first_level_objects_read"] < 10 < big["load_whole_objects_read"]
    assert sorted(c.split(":")[0] for c in big["children"]) == ["document", "index", "messages"]


def test_bench_ui_long_runs(tmp_path):
    proc = run_bench("ui_long", "--saves", "40", "--dir", str(tmp_path))
    out = json.loads(proc.stdout)
    assert out["build"]["saves"] == 40
    api = out["api"]
    for name in ("sessions", "health", "timeline", "far_diff", "tree_root", "tree_messages"):
        assert api[name]["response_bytes"] > 0, name
    assert api["sessions"]["after_background_s"] >= 0


def test_bench_restore_floor_runs(tmp_path):
    out = tmp_path / "floor.json"
    run_bench("restore_floor", "--steps", "20", "--repeat", "2", "--out", str(out))
    r = json.loads(out.read_text())
    assert r["objects"] > 20  # the step-10 state: messages, runs, agents, the root
    assert r["records_decompressed_bytes"] >= r["object_bytes"] > 0  # a restore decompresses at least its objects
    assert all(v > 0 for group in ("castate_ms", "floor_ms", "peer_ms") for v in r[group].values())


def test_a_save_and_a_checkpoint_are_one_round_trip_on_every_database_backend():
    """tools/bench/roundtrips.py counts blob-backend calls (round trips) per operation."""
    out = run_bench("roundtrips", "--steps", "4").stdout
    rows = [line for line in out.splitlines() if line.startswith(("| SQLite", "| PostgreSQL", "| Redis"))]
    assert len(rows) == 3, out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:3] == ["1.00", "1.00"], row  # per save, per checkpoint


def test_bench_history_runs_fresh_restoring_processes(tmp_path):
    out = tmp_path / "history.json"
    run_bench("history", "--saves", "4,8", "--runs", "1", "--systems", "local,sqlite", "--out", str(out))
    r = json.loads(out.read_text())
    for system in ("local", "sqlite"):
        for saves in ("4", "8"):
            row = r["systems"][system][saves]
            assert row["restored_state_bytes"] == row["state_bytes"] > 0  # the middle save came back whole
            assert row["rss_peak_bytes"]["median"] > 10 << 20  # a Python process that imported castate
