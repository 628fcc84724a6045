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
import sqlite3
import struct
import subprocess
import termios
import time
import tomllib
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
            await sm.save_session(
                LONG, {"step": step, "messages": [f"m{i}" for i in range(step)]}, metadata={"s": step}
            )
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
    assert "names 2 checkpoints" in err
    assert f"{LONG}@auto" in err  # says exactly what would work
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
    assert sessions["forked"]["saved"] == sessions["old-run"]["saved"]  # the same commit, saved then
    assert sessions["forked"]["timestamp"] == pytest.approx(sessions["forked"]["updated_ns"] / 1e9)  # as the API
    human = run("sessions", store=store)
    assert human.splitlines()[0].split()[:2] == ["SESSION", "UPDATED"]
    decisions = run_json("forget", "--sessions", "--keep-within", "10m", "--dry-run", store=store)["decisions"]
    assert {d["id"]: d["keep"] for d in decisions} == {"forked": True, "old-run": False}


# -- item 4: fsck and gc agree -------------------------------------------------------------------


def test_fsck_and_gc_say_what_keeps_dangling_objects(demo: tuple[Path, dict[str, Any]]) -> None:
    store, _ = demo
    run("forget", LONG, "--keep-last", "1", "--forget-named", store=store)
    fsck = run("fsck", "--full", store=store)
    assert "reflog" in fsck
    assert "castate gc --reflog-expire 0 --grace 0" in fsck
    gc = run("gc", "--dry-run", store=store)
    assert gc.startswith("Would delete 0 of ")  # the reflog keeps them, and both say so
    assert "castate gc --reflog-expire 0 --grace 0" in gc


# -- item 5: forget's example forgets ------------------------------------------------------------


def test_forget_help_example_is_true_and_dry_run_says_why(demo: tuple[Path, dict[str, Any]]) -> None:
    store, _ = demo
    example = run("forget", "--help").split("example:\n  ")[1].split()
    assert example[:2] == ["castate", "forget"]
    out = run(*example[1:], store=store)
    assert "would forget" in out
    assert "Dry run: would forget 2 checkpoints, keep 3." in out
    plain_policy = run("forget", "--all", "--keep-last", "1", "--dry-run", store=store)
    assert "3 checkpoints kept only because named" in plain_policy
    assert "--forget-named" in plain_policy


# -- item 7 and issue 16 item 10: one creation rule ------------------------------------------------


def test_reads_never_create_a_store_and_writes_do(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    db = tmp_path / "typo.db"
    err = run("--store", f"sqlite:///{db}", "sessions", code=3)  # type: ignore[arg-type]
    assert f"no castate store at {db}" in err
    assert "castate init" in err
    assert not db.exists()
    for url in (redis_url, postgres_url, postgres_url):  # twice: the first read created nothing
        assert "no castate store at" in run("--store", url, "sessions", code=3)
    missing = tmp_path / "nowhere"
    assert f"no castate store at {missing}" in run("sessions", store=missing, code=3)
    assert not missing.exists()

    source = tmp_path / "src"
    run("init", store=source)
    asyncio.run(_save(source, "s"))
    bundle = tmp_path / "s.castate"
    run("export", "s", str(bundle), store=source)
    for target in (tmp_path / "new-dir", f"sqlite:///{tmp_path / 'new.db'}"):  # import creates, as a save does
        assert "Imported session s" in run("--store", str(target), "import", str(bundle))
        assert [s["session_id"] for s in json.loads(run("--store", str(target), "sessions", "--json"))] == ["s"]


async def _save(store: Path | str, session: str) -> None:
    async with castate.StateManager(store) as sm:
        await sm.save_session(session, {"v": 1})


def test_castate_open_creates_a_url_store_only_on_a_save(tmp_path: Path) -> None:
    db = tmp_path / "lib.db"
    url = f"sqlite:///{db}"

    async def scenario() -> None:
        async with castate.StateManager(castate.open(url)) as sm:
            with pytest.raises(castate.StoreNotFoundError, match="a save creates it"):
                await sm.list_sessions()
            assert not db.exists()
            await sm.save_session("s", {"v": 1})
        assert db.exists()
        with pytest.raises(castate.StoreNotFoundError):
            await castate.open(f"sqlite:///{tmp_path / 'other.db'}", create=False).open()

    asyncio.run(scenario())


def test_a_foreign_sqlite_file_is_refused_unchanged(tmp_path: Path) -> None:
    for version in (0, 7):  # plain, and one that sets its own user_version
        db = tmp_path / f"app{version}.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE t (x)")
        conn.execute(f"PRAGMA user_version={version}")
        conn.commit()
        conn.close()
        before = db.read_bytes()
        err = run("--store", f"sqlite:///{db}", "sessions", code=3)  # type: ignore[arg-type]
        assert "not a castate store" in err
        assert db.read_bytes() == before
        assert sorted(p.name for p in tmp_path.glob(f"app{version}.db*")) == [db.name]  # no -wal, no -shm


# -- item 8: health records stay out of the user's reflog --------------------------------------


def test_reflog_leaves_out_health_records_unless_all(demo: tuple[Path, dict[str, Any]]) -> None:
    store, _ = demo
    run("fsck", store=store)
    assert all(r["ref"] != "meta/health" for r in run_json("reflog", store=store))
    assert "record fsck" not in run("reflog", store=store)
    assert run_json("reflog", "--all", "-n", "1", store=store)[0]["ref"] == "meta/health"


# -- items 9 to 12 -------------------------------------------------------------------------------


def test_words_units_and_hints(demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    store, _ = demo
    asyncio.run(_save(store, "lonely"))
    assert "Removed session lonely (1 ref: its head and checkpoints)." in run("rm", "lonely", store=store)
    out = run("forget", LONG, "--keep-last", "4", "--forget-named", "--dry-run", store=store)
    assert "would forget 1 checkpoint," in out
    stats = run("stats", store=store)
    assert "KiB" in stats
    assert " KB" not in stats
    demo_help = subprocess.run(
        [str(CASTATE.with_name("python")), "-m", "castate.demo", "--help"], capture_output=True, text=True
    )
    words = " ".join(demo_help.stdout.split())
    assert "resumes past steps" in words
    assert "the session id to save under" in words

    fake = tmp_path / "nopsycopg"  # an environment without psycopg: the hint names the extra
    (fake / "psycopg").mkdir(parents=True)
    (fake / "psycopg" / "__init__.py").write_text("raise ImportError('No module named psycopg')\n")
    err = run("--store", "postgresql://u@127.0.0.1:1/db", "sessions", code=3, env={"PYTHONPATH": str(fake)})  # type: ignore[arg-type]
    assert "pip install 'castate[postgres]'" in err
    assert "castate init" not in err


def test_global_options_after_the_command(demo: tuple[Path, dict[str, Any]]) -> None:
    store, _ = demo
    sessions = json.loads(run("sessions", "--store", str(store), "--json"))
    assert [s["session_id"] for s in sessions] == [LONG]
    assert "Traceback" in run("show", "ghost", "--store", str(store), "--debug", code=2)


# -- issue 16 item 11, NO_COLOR, and the extras -----------------------------------------------------


def test_control_characters_are_escaped_for_people_and_exact_in_json(tmp_path: Path) -> None:
    store = tmp_path / "state"
    evil = "evil\x1b[2J\nFORGED  2026-01-01 00:00:00  0  0000000\u202e"
    asyncio.run(_save(store, evil))
    human = run("sessions", store=store)
    assert "\x1b" not in human
    assert "\u202e" not in human
    assert len(human.splitlines()) == 2  # no forged row
    assert "evil\\x1b[2J\\nFORGED" in human
    assert json.loads(run("sessions", "--json", store=store))[0]["session_id"] == evil
    code, out = tty("checkpoints", evil, store=store)
    assert code == 0
    assert "\x1b[2J" not in out
    assert "\\x1b[2J" in run("sessions", "--limit", "\x1b[2J", store=store, code=2)  # argparse's echo too


def test_color_only_on_a_terminal_and_never_with_no_color(demo: tuple[Path, dict[str, Any]]) -> None:
    store, _ = demo
    _, colored = tty("sessions", store=store)
    assert "\x1b[1m" in colored  # the bold header
    _, plain_out = tty("sessions", store=store, env={"NO_COLOR": "1"})
    assert "\x1b" not in plain_out
    assert "\x1b" not in run("sessions", store=store)


def test_show_one_value_doctor_and_completion(demo: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    store, _ = demo
    assert json.loads(run("show", f"{LONG}:/step", store=store)) == 8
    assert json.loads(run("show", f"{LONG}@before_tool_step_4:messages/0", store=store)) == "m0"
    doctor = run("doctor", store=store)
    assert "every ref leads to complete, intact data" in doctor
    assert "castate fsck --full" in doctor  # never run here: it says so, and what to run
    assert run_json("doctor", store=store)["ok"]
    script = tmp_path / "castate.bash"
    script.write_text(run("completion", "bash"))
    probe = f"source {script}; COMP_WORDS=(castate re); COMP_CWORD=1; _castate; echo ${{COMPREPLY[@]}}"
    words = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(words) == ["reflog", "restore"]
    probe = f"source {script}; COMP_WORDS=(castate log --o); COMP_CWORD=2; _castate; echo ${{COMPREPLY[@]}}"
    assert subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split() == [
        "--oneline"
    ]
    assert "__fish_seen_subcommand_from log' -l oneline" in run("completion", "fish")


def test_license_is_an_spdx_expression() -> None:
    """The table form made setuptools warn at every install (four times per tools/test.sh run)."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first to read the string form
