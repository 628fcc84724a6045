"""`castate ui` as a command: the address it refuses, the error without the extra, serving on
a free loopback port, and stopping on Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_cli import run
from tests.ui_support import Server


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    run("init", store=path)
    return path


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com", "::"])
def test_other_addresses_need_allow_remote(empty_store: Path, host: str) -> None:
    err = run("ui", "--host", host, "--port", "0", store=empty_store, code=2)
    assert "--allow-remote" in err
    assert "loopback" in err


def test_a_missing_extra_is_named(empty_store: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None  # as if castate[ui] were not installed\n"
        "from castate.cli import main\n"
        f"sys.exit(main(['--store', {str(empty_store)!r}, 'ui', '--port', '0']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "castate[ui]" in proc.stderr
    assert "starlette" in proc.stderr


def test_bad_ports_are_usage_errors(empty_store: Path) -> None:
    assert "65535" in run("ui", "--port", "70000", store=empty_store, code=2)


def test_serves_loopback_and_stops_on_ctrl_c(empty_store: Path, tmp_path: Path) -> None:
    server = Server(empty_store)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "api/sessions", timeout=10) as r:
            assert json.load(r) == {
                "sessions": [],
                "growth_pending": False,
                "growth_error": None,
                "cache_error": None,
            }
        foreign = urllib.request.Request(server.url + "api/sessions", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(foreign, timeout=10)
        assert refused.value.code == 421
        port = server.url.rsplit(":", 1)[1].strip("/")
        busy = run("ui", "--port", port, store=empty_store, code=2)
        assert "pick another port" in busy
    finally:
        code = server.stop()
    assert code == 130  # interrupted, as every castate command reports Ctrl-C
    assert "no castate store" in run("ui", "--port", "0", store=tmp_path / "missing", code=3)
