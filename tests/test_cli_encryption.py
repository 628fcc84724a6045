"""The installed ``castate`` command on encrypted stores: ``init --encrypt``, the key from the
environment, ``--key-file`` or a terminal prompt, ``castate key ...``, and ``castate ui``.

Stores are made in Python with a cheap scrypt cost (``Passphrase(..., n=1024)``); only the
tests of ``init --encrypt``, ``key change`` and the prompts pay the default cost (0.4 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.backends.urls import open_backend
from castate.cli import main
from castate.keys import Passphrase, RawKey
from tests.test_cli import CASTATE, run
from tests.ui_support import Server

PASSWORD = "correct horse battery staple"
MARKER = "plaintext-marker-91d2"
KEY_ENV = ("CASTATE_PASSWORD", "CASTATE_KEY", "CASTATE_KEY_FILE", "CASTATE_NEW_PASSWORD")


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)


def pw(text: str = PASSWORD) -> dict[str, str]:
    return {"CASTATE_PASSWORD": text}


def state(step: int) -> dict[str, Any]:
    return {"who": MARKER, "step": step, "messages": [f"{MARKER} message {i}" for i in range(10 * step)]}


async def fill(store: Path | str, secret: castate.Secret) -> None:
    async with castate.StateManager(open_backend(store, key=secret)) as sm:
        for step in (1, 2):
            await sm.save_session("run-1", state(step))
            await sm.create_checkpoint("run-1", f"step-{step}")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    asyncio.run(fill(path, Passphrase(PASSWORD, n=1024)))
    return path


def key_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(os.urandom(32).hex() + "\n")
    return path


def slots(store: Path, env: dict[str, str] | None = None, *opts: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(run(*opts, "key", "list", "--json", store=store, env=env or pw()))
    return listed


# -- init --encrypt ---------------------------------------------------------------------------------


def test_init_encrypt_with_a_passphrase_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "new"
    said = run("init", "--encrypt", store=path, env=pw())
    assert "Created an encrypted castate store" in said
    assert "already an encrypted castate store" in run("init", store=path)
    again = run("init", "--encrypt", store=path, env=pw(), code=2)
    assert "already encrypted" in again
    assert "castate key add" in again
    [slot] = slots(path)
    assert slot["kind"] == "passphrase"
    assert slot["opened"] is True
    assert run("sessions", "--json", store=path, env=pw()) == "[]\n"


@pytest.mark.parametrize("kind", ["directory", "sqlite", "postgres", "redis"])
def test_init_encrypt_with_a_key_file_then_every_command_takes_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    urls = {"directory": str(tmp_path / "new"), "sqlite": f"sqlite:///{tmp_path}/new.db"}
    url = urls[kind] if kind in urls else request.getfixturevalue(f"{kind}_url")
    key = key_file(tmp_path, "store.key")
    run("--store", url, "init", "--encrypt", "--key-file", str(key))
    asyncio.run(fill(url, RawKey.from_file(key)))
    listed = json.loads(run("--store", url, "--key-file", str(key), "sessions", "--json"))
    assert [s["session_id"] for s in listed] == ["run-1"]
    # --key-file after the command, and CASTATE_KEY_FILE, work the same
    assert json.loads(run("--store", url, "show", "run-1", "--key-file", str(key))) == state(2)
    assert json.loads(run("--store", url, "show", "run-1~1", env={"CASTATE_KEY_FILE": str(key)})) == state(1)
    assert "no key was given" in run("--store", url, "sessions", code=3)


def test_init_encrypt_refuses_without_a_key_and_on_a_store_with_data(tmp_path: Path) -> None:
    missing = run("init", "--encrypt", store=tmp_path / "new", code=2)  # stdin is not a terminal
    assert "CASTATE_PASSWORD" in missing
    assert "--key-file" in missing
    assert not (tmp_path / "new").exists()
    plain = tmp_path / "plain"

    async def save_plain() -> None:
        async with castate.StateManager(castate.FileStorageBackend(plain)) as sm:
            await sm.save_session("s", {"v": 1})

    asyncio.run(save_plain())
    full = run("init", "--encrypt", store=plain, env={"CASTATE_KEY": os.urandom(32).hex()}, code=3)
    assert "holds data and is not encrypted" in full
    assert json.loads(run("show", "s", store=plain)) == {"v": 1}  # left as it was
    key = key_file(tmp_path, "k")
    assert "--encrypt" in run("init", "--key-file", str(key), store=tmp_path / "other", code=2)
    assert "is not encrypted" in run("--key-file", str(key), "sessions", store=plain, code=2)


# -- commands on an encrypted store ------------------------------------------------------------------


def test_commands_work_on_an_encrypted_store(store: Path, tmp_path: Path) -> None:
    assert [s["session_id"] for s in json.loads(run("sessions", "--json", store=store, env=pw()))] == ["run-1"]
    assert [c["name"] for c in json.loads(run("checkpoints", "run-1", "--json", store=store, env=pw()))] == [
        "step-2",
        "step-1",
    ]
    assert json.loads(run("show", "run-1@step-1", store=store, env=pw())) == state(1)
    assert "/step" in run("diff", "run-1@step-1", "run-1", store=store, env=pw())
    run("checkpoint", "run-1", "by-cli", store=store, env=pw())
    run("fork", "run-1@step-1", "run-2", store=store, env=pw())
    assert json.loads(run("show", "run-2", store=store, env=pw())) == state(1)
    assert "ok" in json.loads(run("fsck", "--json", "--full", store=store, env=pw()))
    stats = json.loads(run("stats", "--json", store=store, env=pw()))
    assert stats["encrypted"] is True
    assert stats["key_slots"] == 1
    assert "encrypted      yes (1 key slot)" in run("stats", store=store, env=pw())
    assert "encrypted." in run("doctor", store=store, env=pw())
    run("restore", "run-1@step-1", store=store, env=pw())
    assert json.loads(run("show", "run-1", store=store, env=pw())) == state(1)
    run("rm", "run-2", store=store, env=pw())
    run("gc", "--grace", "0", "--reflog-expire", "0", store=store, env=pw())
    assert json.loads(run("show", "run-1@step-2", store=store, env=pw())) == state(2)
    files = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert MARKER.encode() not in files
    assert b"step-1" not in files  # checkpoint names are encrypted too
    plain = json.loads(run("stats", "--json", store=_plain_store(tmp_path)))
    assert plain["encrypted"] is False


def _plain_store(tmp_path: Path) -> Path:
    path = tmp_path / "plain"
    run("init", store=path)
    return path


def test_no_key_and_a_wrong_key_are_one_line_errors(store: Path) -> None:
    missing = run("sessions", store=store, code=3)  # stdin is not a terminal: no prompt
    assert missing.count("\n") == 1
    assert f"store {store} is encrypted and no key was given" in missing
    for where in ("CASTATE_PASSWORD", "CASTATE_KEY", "CASTATE_KEY_FILE", "--key-file"):
        assert where in missing
    wrong = run("sessions", store=store, env=pw("not the passphrase"), code=3)
    assert wrong.count("\n") == 1
    assert "opens none of the 1 key slots" in wrong
    assert "Traceback" not in wrong + missing
    assert "Traceback" in run("--debug", "sessions", store=store, env=pw("nope"), code=3)


# -- castate key ... ----------------------------------------------------------------------------------


def test_key_add_list_remove(store: Path, tmp_path: Path) -> None:
    key = key_file(tmp_path, "ci.key")
    added = json.loads(run("key", "add", "--key-file", str(key), "--label", "ci", "--json", store=store, env=pw()))
    assert added["kind"] == "key"
    listed = slots(store, {}, "--key-file", str(key))
    assert [(s["kind"], s["label"], s["opened"]) for s in listed if s["slot"] == added["slot"]] == [("key", "ci", True)]
    assert len(listed) == 2
    assert all(s["created"].endswith("Z") for s in listed)
    table = run("--key-file", str(key), "key", "list", store=store)
    assert f"* {added['slot']}" in table
    # the slot that opened the store is not removed by mistake
    refused = run("--key-file", str(key), "key", "remove", added["slot"][:6], store=store, code=2)
    assert "opened the store" in refused
    assert json.loads(run("key", "remove", added["slot"][:6], "--json", store=store, env=pw())) == {
        "removed": added["slot"]
    }
    assert "opens none" in run("--key-file", str(key), "sessions", store=store, code=3)
    last = run("key", "remove", slots(store)[0]["slot"], "--force", store=store, env=pw(), code=2)
    assert "only key slot" in last
    assert "not in store" in run("key", "remove", "ffff", store=store, env=pw(), code=2)
    assert json.loads(run("show", "run-1", store=store, env=pw())) == state(2)
    assert "is not encrypted" in run("key", "list", store=_plain_store(tmp_path), code=3)


def test_key_change_replaces_the_passphrase(store: Path) -> None:
    env = {**pw(), "CASTATE_NEW_PASSWORD": "a new passphrase"}
    [old] = slots(store)
    changed = json.loads(run("key", "change", "--json", store=store, env=env))
    assert changed["removed"] == old["slot"]
    assert "opens none" in run("sessions", store=store, env=pw(), code=3)
    new = pw("a new passphrase")
    assert [s["slot"] for s in slots(store, new)] == [changed["slot"]]
    assert json.loads(run("show", "run-1@step-1", store=store, env=new)) == state(1)
    assert "CASTATE_NEW_PASSWORD" in run("key", "add", store=store, env=new, code=2)  # no new key, no terminal


def test_key_commands_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["key"], ["key", "list"], ["key", "add"], ["key", "remove"], ["key", "change"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        text = capsys.readouterr().out
        assert f"usage: castate {' '.join(argv)}".strip() in text
        assert "example:\n  " in text if argv else "    key " in text


# -- a terminal: the passphrase prompts ----------------------------------------------------------------


def run_tty(store: Path, *args: str, answers: list[str]) -> tuple[int, str]:
    """The command on a pseudo-terminal, typing ``answers`` at its prompts (lines ending ': ')."""
    exe = str(CASTATE) if CASTATE.exists() else shutil.which("castate")
    assert exe
    env = {k: v for k, v in os.environ.items() if k not in KEY_ENV and k != "CASTATE_STORE"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, stdin and stdout
        os.execve(exe, [exe, "--store", str(store), *args], env)
    out, pending, deadline = b"", list(answers), time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if pending and out.endswith(b": "):
                os.write(fd, pending.pop(0).encode() + b"\n")
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_a_terminal_is_asked_the_passphrase_once(store: Path) -> None:
    code, out = run_tty(store, "sessions", answers=[PASSWORD])
    assert code == 0, out
    assert f"Passphrase for {store}: " in out
    assert PASSWORD not in out  # not echoed
    assert "run-1" in out
    code, out = run_tty(store, "sessions", answers=["wrong"])
    assert code == 3, out
    assert out.count("Passphrase for") == 1
    assert "opens none" in out


def test_init_encrypt_on_a_terminal_asks_twice(tmp_path: Path) -> None:
    code, out = run_tty(tmp_path / "a", "init", "--encrypt", answers=["one", "two"])
    assert code == 2, out
    assert "differ" in out
    assert not (tmp_path / "a" / "volumes").exists() or not any((tmp_path / "a" / "volumes").iterdir())
    code, out = run_tty(tmp_path / "b", "init", "--encrypt", answers=["typed twice", "typed twice"])
    assert code == 0, out
    assert "New passphrase" in out
    assert "Type it again" in out
    assert len(slots(tmp_path / "b", pw("typed twice"))) == 1


# -- castate ui ------------------------------------------------------------------------------------------


def test_ui_serves_an_encrypted_store_with_the_key_from_the_environment(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTATE_PASSWORD", PASSWORD)
    server = Server(store)
    try:
        with urllib.request.urlopen(server.url + "api/sessions", timeout=10) as r:
            listed = json.load(r)
        assert [s["session_id"] for s in listed["sessions"]] == ["run-1"]
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert PASSWORD not in r.read().decode()
    finally:
        assert server.stop() == 130
    cache = store.parent / "ui-cache"
    assert not cache.exists() or not any(cache.iterdir())  # no sizes of an encrypted store in the clear
    monkeypatch.delenv("CASTATE_PASSWORD")
    assert "no key was given" in run("ui", "--port", "0", store=store, code=3)


def test_import_takes_the_source_stores_key_from_a_bundle_key_file(store: Path, tmp_path: Path) -> None:
    """A session moves from one encrypted store to another with another key: the bundle stays
    encrypted on the way, and the import re-encrypts it under the destination's key."""
    source_key = key_file(tmp_path, "source.key")
    run("key", "add", "--key-file", str(source_key), store=store, env=pw())  # the bundle carries the slots
    bundle = tmp_path / "run-1.castate"
    run("export", "run-1", str(bundle), store=store, env=pw())
    assert MARKER.encode() not in bundle.read_bytes()
    dest = tmp_path / "dest"
    dest_key = key_file(tmp_path, "dest.key")
    asyncio.run(fill(dest, RawKey.from_file(dest_key)))
    # the destination's own key does not open a bundle of another store
    said = run("--key-file", str(dest_key), "import", str(bundle), "--session", "moved", store=dest, code=3)
    assert "CASTATE_BUNDLE" in said
    run(
        "--key-file",
        str(dest_key),
        "import",
        str(bundle),
        "--session",
        "moved",
        "--bundle-key-file",
        str(source_key),
        store=dest,
    )
    shown = run("--key-file", str(dest_key), "show", "moved", store=dest)
    assert MARKER in shown
    data = b"".join(p.read_bytes() for p in dest.rglob("*") if p.is_file())
    assert MARKER.encode() not in data
