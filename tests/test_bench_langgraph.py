"""Smoke test of the LangGraph checkpointer benchmark: a short run, real checks, no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_langgraph_bench_runs_castate_and_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "tools.bench.langgraph_bench", "--quick", "--systems", "castate,sqlite"]
    cmd += ["--out", str(out), "--dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["turns"] == 30
    assert [r["system"] for r in report["results"]] == ["castate", "sqlite"]
    for r in report["results"]:
        assert r["ok"], r
        assert r["checkpoints"] == 2 + 31 + 31 // 3  # the input, __start__, and one per agent or tool step
        assert r["disk"]["allocated"] > 0
        assert r["step_ms"] > 0
        assert r["put_ms"] > 0
    assert "| castate |" in report["table"]
    assert "| sqlite |" in report["table"]
    assert list(tmp_path.iterdir()) == [out]  # the stores were removed
