"""The castate command as a git or restic user meets it: whole ids in tables at any width,
short references, honest times, exit codes, store creation, words (issue 19).

Every test drives the installed ``castate`` command; the width cases run it in a
pseudo-terminal of a given size."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import pytest

import castate
from tests.test_cli import CASTATE, run, run_json

LONG = "market_analysis_2024_q1"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tty(*args: str, store: Path | str | None, columns: int = 80, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit code and output (stdout and stderr) of castate run on a terminal ``columns`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("CASTATE_STORE", "COLUMNS", "LINES", "NO_COLOR")}
    full_env.update({"TERM": "xterm-256color", **(env or {})})
    argv = [str(CASTATE), *(["--store", str(store)] if store is not None else []), *args]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=full_env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=60)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def plain(text: str) -> str:
    return ANSI.sub("", text)


async def _fill(store: Path) -> dict[str, Any]:
    """A demo-like store: one long-named session with checkpoints before steps, two taken
    under one name, and a fork."""
    async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
        cps = {}
        for step in range(1, 7):
            await sm.save_session(LONG, {"step": step, "messages": [f"m{i}" for i in range(step)]}, metadata={"s": step})
            if step % 2 == 0:
                cps[step] = await sm.create_checkpoint(LONG, f"before_tool_step_{step}")
        cps["auto1"] = await sm.create_checkpoint(LONG, "auto")
        await sm.save_session(LONG, {"step": 7})
        cps["auto2"] = await sm.create_checkpoint(LONG, "auto")
        await sm.save_session(LONG, {"step": 8})
        return cps


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "state"
    run("init", store=path)
    return path, asyncio.run(_fill(path))


# -- item 1: nothing cut -------------------------------------------------------------------------


def test_tables_never_cut_ids_names_or_times(demo: tuple[Path, dict[str, Any]]) -> None:
    store, cps = demo
    code, out = tty("checkpoints", LONG, store=store, columns=80)
    assert code == 0
    lines = plain(out).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[0] == "CHECKPOINT"
    assert f"{LONG}/before_tool_step_4 " in out  # a unique name: SESSION/NAME, whole
    shared = [w for w in out.split() if w.startswith(f"{LONG}/auto/")]  # a shared name: enough of the stamp
    assert len(shared) == 2
    assert sorted(next(c for c in (cps["auto1"], cps["auto2"]) if c.startswith(w)) for w in shared) == sorted(
        (cps["auto1"], cps["auto2"])
    )
    assert all(len(w.split("/")[2]) >= 15 for w in shared)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out)  # times whole
    assert "hidden to fit 80 columns" in out  # a dropped column is said

    code, wide = tty("reflog", store=store, columns=120)
    assert code == 0
    head = plain(wide).splitlines()[0].split()
    assert head == ["TIME", "REF", "OLD", "NEW", "MESSAGE"]  # 120 columns keep every column
    for line in plain(wide).splitlines()[1:]:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", line), line

    piped = run("reflog", "--full", store=store).splitlines()  # a pipe: every row whole, any length
    records = run_json("reflog", store=store)
    assert len(piped) == len(records) + 1
    for line, rec in zip(piped[1:], records, strict=True):
        assert line.endswith(rec["message"]), (line, rec)
        assert rec["new"] is None or rec["new"] in line


def test_commit_ids_are_unique_prefixes_and_full_with_full(demo: tuple[Path, dict[str, Any]]) -> None:
    store, _ = demo
    shown = run("log", LONG, store=store).splitlines()[1:]
    full = [c["commit"] for c in run_json("log", LONG, store=store)["commits"]]
    prefixes = [line.split()[0] for line in shown]
    assert all(len(p) >= 7 and f.startswith(p) for p, f in zip(prefixes, full, strict=True))
    assert [line.split()[0] for line in run("log", LONG, "--full", store=store).splitlines()[1:]] == full
    assert json.loads(run("show", prefixes[2], "--path", "/step", store=store)) == 6
    oneline = run("log", LONG, "--oneline", "-n", "3", store=store).splitlines()
    assert len(oneline) == 3
    assert oneline[1].startswith(prefixes[1] + " ")
    assert "(auto)" in oneline[1]


# -- item 2: short references -------------------------------------------------------------------


def test_short_references(demo: tuple[Path, dict[str, Any]]) -> None:
    store, cps = demo

    def step(ref: str) -> Any:
        return json.loads(run("show", ref, "--path", "/step", store=store))

    assert step(f"{LONG}/before_tool_step_4") == 4  # SESSION/NAME where unambiguous
    assert step(f"{LONG}@before_tool_step_4") == 4  # SESSION@NAME
    assert step(f"{LONG}@auto") == 7  # the newest of that name
    assert step(f"{LONG}@before_tool_step_4~1") == 3
    assert step(f"{LONG}~2") == 6
    stamp = cps["auto1"].split("/")[2]
    assert step(f"{LONG}/auto/{stamp[:-3]}") == 6  # a stamp prefix
    err = run("show", f"{LONG}/auto", store=store, code=2)
    assert "names 2 checkpoints" in err and f"{LONG}@auto" in err  # says exactly what would work
    err = run("show", f"{LONG}/before_tool_step_9", store=store, code=2)
    assert f"castate checkpoints {LONG}" in err
    out = run("fork", f"{LONG}@before_tool_step_2", "retry", store=store)
    assert "forked" in out
    assert step("retry") == 2
    assert "No differences." in run("diff", f"{LONG}/before_tool_step_6", f"{LONG}~2", store=store)


# -- item 3: a fork is young --------------------------------------------------------------------


def test_a_fork_is_timed_by_its_ref_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "state"
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)  # the run happened an hour ago

    async def old_run() -> None:
        async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
            await sm.save_session("old-run", {"step": 1})

    asyncio.run(old_run())
    monkeypatch.undo()
    run("fork", "old-run", "forked", store=store)  # now
    sessions = {s["session_id"]: s for s in run_json("sessions", store=store)}
    assert sessions["forked"]["updated_ns"] - sessions["old-run"]["updated_ns"] > 3000 * 10**9
    assert sessions["forked"]["timestamp"] == sessions["old-run"]["timestamp"]  # the same commit, saved then
    human = run("sessions", store=store)
    assert human.splitlines()[0].split()[:2] == ["SESSION", "UPDATED"]
    decisions = run_json("forget", "--sessions", "--keep-within", "10m", "--dry-run", store=store)["decisions"]
    assert {d["id"]: d["keep"] for d in decisions} == {"forked": True, "old-run": False}
