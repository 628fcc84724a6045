"""End to end: the installed ``castate`` command, run in a subprocess on a real store."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

import castate
from castate.repository.health import read_runs
from castate.repository.packs.store import QUARANTINE_PREFIX
from tests.journal_support import volume_records

CASTATE = Path(sys.executable).with_name("castate")
COMMANDS = [
    "init",
    "upgrade",
    "sessions",
    "checkpoints",
    "log",
    "reflog",
    "show",
    "diff",
    "checkpoint",
    "restore",
    "fork",
    "rm",
    "forget",
    "gc",
    "fsck",
    "stats",
    "export",
    "import",
    "import-marsys",
    "ui",
    "doctor",
    "completion",
]


def run(*args: str, store: Path | None = None, env: dict[str, str] | None = None, code: int = 0) -> str:
    exe = str(CASTATE) if CASTATE.exists() else shutil.which("castate")
    assert exe, "the castate command is not installed (pip install -e .)"
    argv = [exe, *(["--store", str(store)] if store is not None else []), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "CASTATE_STORE"}
    full_env.update(env or {})
    proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=120)
    assert proc.returncode == code, (argv, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout if code == 0 else proc.stderr


def run_json(*args: str, store: Path) -> Any:
    return json.loads(run(*args, "--json", store=store))


def state(step: int) -> dict[str, Any]:
    return {
        "task": "market analysis",
        "step": step,
        "messages": [{"role": "user" if i % 2 else "assistant", "content": f"message {i}"} for i in range(50 * step)],
        "blob": b"\x00\x01" * 10,
    }


async def fill(store: Path) -> list[str]:
    async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
        cps = []
        for step in range(1, 4):
            await sm.save_session("run-1", state(step))
            cps.append(await sm.create_checkpoint("run-1", f"step-{step}"))
        await sm.save_session("run-2", {"other": True})
        return cps


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    run("init", store=path)
    return path


async def recorded_runs(store: Path) -> list[dict[str, Any]]:
    async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
        return await read_runs(sm.repository)


@pytest.fixture
def cps(store: Path) -> list[str]:
    return asyncio.run(fill(store))


def test_init_and_store_selection(tmp_path: Path) -> None:
    path = tmp_path / "s"
    assert "Created" in run("init", store=path)
    assert "already" in run("init", store=path)
    assert run("sessions", "--json", env={"CASTATE_STORE": str(path)}).strip() == "[]"
    cwd_store = tmp_path / "cwd"
    cwd_store.mkdir()
    subprocess.run([str(CASTATE), "init"], cwd=cwd_store, check=True, capture_output=True)
    assert (cwd_store / "state" / "castate.json").exists()


def test_listing_commands(store: Path, cps: list[str]) -> None:
    sessions = run_json("sessions", store=store)
    assert [(s["session_id"], s["checkpoints"]) for s in sessions] == [("run-1", 3), ("run-2", 0)]
    table = run("sessions", store=store).splitlines()
    assert table[0].split() == ["SESSION", "UPDATED", "CHECKPOINTS", "HEAD"]
    assert table[1].startswith("run-1 ")
    assert "\x1b[" not in "".join(table)  # no colour when not on a terminal
    assert len({line.index(line.split()[-1]) for line in table}) == 1  # aligned last column
    assert [c["checkpoint_id"] for c in run_json("checkpoints", "run-1", store=store)] == cps[::-1]
    log = run_json("log", "run-1", store=store)
    assert len(log["commits"]) == 3
    assert log["commits"][0]["checkpoints"] == ["step-3"]
    assert not log["older_history_removed"]
    reflog = run_json("reflog", "run-1", "-n", "2", store=store)
    assert [r["message"] for r in reflog] == ["checkpoint step-3", "save run-1"]


def test_show_and_diff(store: Path, cps: list[str]) -> None:
    shown = json.loads(run("show", cps[0], store=store))
    assert shown["step"] == 1
    assert shown["blob"] == {"$bytes": base64.b64encode(b"\x00\x01" * 10).decode()}
    assert json.loads(run("show", "run-1", "--path", "/messages/7", store=store)) == {
        "role": "user",
        "content": "message 7",
    }
    assert json.loads(run("show", "run-1~2", "--path", "/step", store=store)) == 1
    commit = json.loads(run("show", "run-1", "--commit", store=store))
    assert commit["session"] == "run-1"
    assert len(commit["parents"]) == 1
    changes = run_json("diff", cps[0], cps[2], store=store)
    assert [c["path"] for c in changes] == ["/step"] + [f"/messages/{i}" for i in range(50, 150)]  # key order
    patch = json.loads(run("diff", cps[0], "run-1", "--patch", store=store))
    start = {k: v for k, v in state(1).items() if k != "blob"}
    end = {k: v for k, v in state(3).items() if k != "blob"}
    assert jsonpatch.apply_patch(copy.deepcopy(start), patch) == end
    human = run("diff", cps[1], "run-1", store=store)
    assert "+ /messages/100" in human
    assert "~ /step  2 -> 3" in human
    assert "No differences." in run("diff", "run-1", cps[2], store=store)
    assert "--path /a/b" not in run("show", "--help")  # help text has its own example
    assert run("show", "run-1", "--path", "/nope", store=store, code=2).count("\n") == 1


def test_checkpoint_restore_undo_and_fork(store: Path, cps: list[str]) -> None:
    cp = run("checkpoint", "run-1", "manual", "--meta", "reason=test", store=store).strip()
    assert cp.startswith("run-1/manual/")
    restored = run_json("restore", cps[0], store=store)
    assert restored["changed"]
    assert json.loads(run("show", "run-1", "--path", "/step", store=store)) == 1
    human = run("restore", restored["previous"], "--session", "run-1", store=store)
    assert "now at" in human
    assert json.loads(run("show", "run-1", "--path", "/step", store=store)) == 3
    out = run("fork", cps[1], "run-1-retry", store=store)
    assert "forked" in out
    assert json.loads(run("show", "run-1-retry", "--path", "/step", store=store)) == 2
    assert "already exists" in run("fork", cps[1], "run-1-retry", store=store, code=2)  # usage, not a race


def test_rm_forget_gc_fsck_stats(store: Path, cps: list[str]) -> None:
    dry = run_json("forget", "run-1", "--keep-last", "1", "--forget-named", "--dry-run", store=store)
    assert [d["keep"] for d in dry["decisions"]] == [True, False, False]
    assert len(run_json("checkpoints", "run-1", store=store)) == 3
    named = run("forget", "--all", "--keep-last", "1", store=store)
    assert "named" in named  # named checkpoints are kept unless asked otherwise
    out = run_json("forget", "run-1", "--keep-last", "1", "--forget-named", store=store)
    assert out["refs_removed"] == 2
    assert "refusing an empty retention policy" in run("forget", "--all", store=store, code=2)
    assert "--all" in run("forget", "--keep-last", "1", store=store, code=2)
    assert "Removed session run-2" in run("rm", "run-2", store=store)
    kept = run_json("gc", "--grace", "0", store=store)
    assert kept["deleted"] == 0  # the reflog still remembers them
    gc = run_json("gc", "--grace", "0", "--reflog-expire", "0", store=store)
    assert gc["deleted"] > 0
    assert gc["deleted_bytes"] > 0
    assert (
        "use it on an idle store"
        in subprocess.run(
            [str(CASTATE), "--store", str(store), "gc", "--grace", "0", "--dry-run"], capture_output=True, text=True
        ).stderr
    )
    assert run_json("fsck", "--full", store=store)["ok"]
    assert "No damage found." in run("fsck", store=store)
    runs = asyncio.run(recorded_runs(store))  # what `castate ui` shows as the store's health
    assert [r["op"] for r in runs] == ["gc", "gc", "fsck", "fsck"]  # the dry run is not recorded
    assert runs[1]["deleted"] == gc["deleted"]
    assert runs[2]["full"]
    assert runs[2]["ok"]
    stats = run_json("stats", store=store)
    assert stats["sessions"] == 1
    assert stats["checkpoints"] == 1
    assert stats["dedup_ratio"] > 1
    assert "dedup ratio" in run("stats", store=store)
    log = run_json("log", "run-1", store=store)
    assert log["older_history_removed"]
    assert "earlier saves" in run("log", "run-1", store=store)


def test_fsck_reports_damage_with_exit_code_1(store: Path, cps: list[str]) -> None:
    volume = store / "volumes" / "00000001.vol"
    _, start, length = next(r for r in volume_records(volume) if r[0].startswith("packs/"))  # run-1's first save
    data = bytearray(volume.read_bytes())
    data[start + length // 2] ^= 0xFF
    volume.write_bytes(bytes(data))
    proc = subprocess.run([str(CASTATE), "--store", str(store), "fsck", "--json"], capture_output=True, text=True)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert not report["ok"]
    assert report["problems"]
    assert "sessions/run-1" in report["damaged_refs"]
    corrupt = [p for p in report["problems"] if p["problem"] == "corrupt"]
    assert report["quarantined"] == len(corrupt)
    assert corrupt
    assert asyncio.run(quarantined_blobs(store))  # the damaged pack is kept for inspection, not deleted
    proc = subprocess.run([str(CASTATE), "--store", str(store), "fsck"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "Damage found (exit code 1)."
    assert "damaged ref sessions/run-1" in proc.stdout


async def quarantined_blobs(store: Path) -> list[str]:
    blobs = castate.LocalBackend(store)
    await blobs.open()
    try:
        return [info.name for info in await blobs.list_blobs(QUARANTINE_PREFIX)]
    finally:
        await blobs.close()


def test_export_and_import(store: Path, cps: list[str], tmp_path: Path) -> None:
    bundle = tmp_path / "run-1.castate"
    out = run("export", "run-1", str(bundle), store=store)
    assert "Exported session run-1 (4 refs" in out
    other = tmp_path / "other"
    run("init", store=other)
    got = run_json("import", str(bundle), store=other)
    assert got["written"] == got["objects"]
    assert run_json("import", str(bundle), "--session", "copy", store=other)["written"] == 0
    assert json.loads(run("show", "copy", "--path", "/step", store=other)) == 3
    assert [s["session_id"] for s in run_json("sessions", store=other)] == ["copy", "run-1"]
    assert "already exists" in run("import", str(bundle), store=other, code=2)


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, store: Path) -> None:
    missing = run("sessions", store=tmp_path / "nowhere", code=3)
    assert missing.count("\n") == 1
    assert "castate init" in missing
    assert "Traceback" not in missing
    assert "no session, checkpoint or commit named 'ghost'" in run("show", "ghost", store=store, code=2)
    assert "usage:" in run("diff", "only-one", store=store, code=2)
    assert "not a duration" in run("gc", "--grace", "soon", store=store, code=2)
    debug = run("--debug", "show", "ghost", store=store, code=2)
    assert "Traceback" in debug


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    text = run(command, "--help")
    assert f"usage: castate {command}" in text
    assert "example:\n  castate " in text


def test_top_level_help_lists_every_command() -> None:
    text = run("--help")
    for command in COMMANDS:
        assert f"    {command} " in text or f"    {command}\n" in text
    assert "exit codes" in text


def test_store_urls(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    url = "sqlite:///" + str(db)  # sqlite:////abs/path.db: an absolute path

    async def fill_sqlite() -> str:
        async with castate.StateManager(url) as sm:
            await sm.save_session("s", {"v": 1})
            return await sm.create_checkpoint("s", "first")

    assert "ready" in run("--store", url, "init")
    cp = asyncio.run(fill_sqlite())
    sessions = json.loads(run("--store", url, "sessions", "--json"))
    assert [s["session_id"] for s in sessions] == ["s"]
    assert json.loads(run("--store", url, "show", cp)) == {"v": 1}
    assert "ready" in run("init", env={"CASTATE_STORE": url})


def test_fsck_repair_refs_rebuilds_a_damaged_journal_and_rolls_back_damaged_refs(store: Path, cps: list[str]) -> None:
    journal = store / "refs.journal"
    data = bytearray(journal.read_bytes())
    data[60] ^= 0xFF  # inside the first record: the first save of run-1
    journal.write_bytes(bytes(data))
    err = run("sessions", store=store, code=3)
    assert "castate fsck --repair-refs" in err
    out = fsck_output(store, "--repair-refs")
    assert "was damaged" in out
    assert "Lost: 1 record of ref changes" in out
    assert "quarantine" in out
    assert out.splitlines()[-1] == "Damage found (exit code 1)."
    assert [s["session_id"] for s in run_json("sessions", store=store)] == ["run-1", "run-2"]
    assert "No damage found." in run("fsck", store=store)

    # Now the data of run-1's head goes; --repair-refs moves run-1 back to its newest intact save.
    asyncio.run(_save_and_lose_head(store))
    report = json.loads(fsck_output(store, "--repair-refs", "--json"))
    assert report["ref_repair"]["damaged"] is False
    (rolled,) = report["rolled_back"]
    assert rolled["ref"] == "sessions/run-1"
    assert rolled["restored"] is not None
    assert json.loads(run("show", "run-1", store=store))["step"] == 3
    assert "No damage found." in run("fsck", store=store)


def fsck_output(store: Path, *args: str) -> str:
    """stdout of a fsck that finds damage (exit code 1)."""
    proc = subprocess.run([str(CASTATE), "--store", str(store), "fsck", *args], capture_output=True, text=True)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    return proc.stdout


async def _save_and_lose_head(store: Path) -> None:
    async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
        await sm.save_session("run-1", state(4))
        commit = await sm.repository.read_commit((await sm.resolve("run-1")).commit)
        await sm.repository.backend.quarantine_objects([commit.root])


def plain(value: Any) -> Any:
    """A fixture's expected state as Python values ({"__bytes__": hex} back to bytes)."""
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_upgrade_moves_a_format_1_sqlite_store_into_packs(tmp_path: Path) -> None:
    """The fixture was made by castate at 271f407 (format 1): refused, upgraded, then read back whole."""
    fixtures = Path(__file__).parent / "fixtures" / "v1"
    db = tmp_path / "store.sqlite"
    shutil.copy(fixtures / "store.sqlite", db)
    expected = json.loads((fixtures / "store-sqlite-expected.json").read_text())
    url = "sqlite:///" + str(db)
    assert "upgrade`" in run("sessions", store=url, code=3)  # type: ignore[arg-type]
    report = json.loads(run("upgrade", "--json", store=url))  # type: ignore[arg-type]
    assert report["legacy"] == expected["object_rows"]
    assert report["damaged"] == []
    assert "nothing to upgrade" in run("upgrade", store=url)  # type: ignore[arg-type]

    async def read() -> None:
        async with castate.StateManager(url) as sm:
            for session, state in expected["sessions"].items():
                assert await sm.load_session(session) == plain(state)
            for cp in expected["checkpoints"].values():
                assert await sm.restore_checkpoint(cp["id"]) == plain(cp["state"])

    asyncio.run(read())


def test_upgrade_moves_a_format_1_local_store_into_volumes(tmp_path: Path) -> None:
    """The fixture was made by castate at 5e76cb1 (the local store's own format 1: packs/*.pack and
    a loose object): refused with the command to run, upgraded, then read back whole."""
    fixtures = Path(__file__).parent / "fixtures" / "v1"
    store = tmp_path / "store"
    shutil.copytree(fixtures / "local-store", store)
    expected = json.loads((fixtures / "store-local-expected.json").read_text())
    assert "upgrade`" in run("sessions", store=store, code=3)
    report = json.loads(run("upgrade", "--json", store=store))
    assert report["legacy"] == expected["objects"]
    assert report["damaged"] == []
    assert not (store / "packs").exists()
    assert not (store / "objects").exists()
    assert json.loads((store / "castate.json").read_text())["version"] == 2
    assert "nothing to upgrade" in run("upgrade", store=store)

    async def read() -> None:
        async with castate.StateManager(str(store)) as sm:
            for session, state in expected["sessions"].items():
                assert await sm.load_session(session) == plain(state)
            for cp in expected["checkpoints"].values():
                assert await sm.restore_checkpoint(cp["id"]) == plain(cp["state"])
            loose = bytes.fromhex(expected["loose_id"])
            assert loose in await sm.repository.backend.has_objects([loose])

    asyncio.run(read())
    assert "No damage found." in run("fsck", store=store)


def test_show_and_diff_render_typed_values(store: Path) -> None:
    """Typed values on the command line: one readable line in a diff, tagged JSON objects in
    --json, --patch and show; a user type (never registered in the CLI) as a tagged dict."""
    import dataclasses
    import datetime as dt
    import decimal
    import uuid

    @dataclasses.dataclass
    class Note:
        text: str

    when = dt.datetime(2026, 12, 5, 2, 10, 23, tzinfo=dt.UTC)

    async def save() -> str:
        castate.register(Note, name="test.cli.note")
        try:
            async with castate.StateManager(castate.FileStorageBackend(store)) as sm:
                await sm.save_session("t", {"at": when, "id": uuid.UUID(int=5), "n": 1})
                one = await sm.create_checkpoint("t", "one")
                await sm.save_session(
                    "t",
                    {
                        "at": when + dt.timedelta(hours=1),
                        "id": uuid.UUID(int=5),
                        "n": 1,
                        "price": decimal.Decimal("9.90"),
                        "pair": (1, 2),
                        "tags": {"b", "a"},
                        "nan": float("nan"),
                        "note": Note("hi"),
                    },
                )
                return one
        finally:
            castate.codec.types.unregister("test.cli.note")

    one = asyncio.run(save())
    human = run("diff", one, "t", store=store)
    assert "~ /at  datetime 2026-12-05T02:10:23+00:00 -> datetime 2026-12-05T03:10:23+00:00" in human
    assert "+ /price  Decimal 9.90" in human
    assert "+ /nan  float nan" in human
    patch = json.loads(run("diff", one, "t", "--patch", store=store))
    assert {"op": "replace", "path": "/at", "value": {"$datetime": "2026-12-05T03:10:23+00:00"}} in patch
    assert {"op": "add", "path": "/tags", "value": {"$set": ["a", "b"]}} in patch
    shown = json.loads(run("show", "t", store=store))
    assert list(shown) == ["at", "id", "n", "price", "pair", "tags", "nan", "note"]  # insertion order
    assert shown["id"] == {"$UUID": "00000000-0000-0000-0000-000000000005"}
    assert shown["pair"] == {"$tuple": [1, 2]}
    assert shown["note"] == {"__castate_type__": "test.cli.note", "value": {"text": "hi"}}
