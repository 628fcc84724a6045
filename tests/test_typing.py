"""castate's shipped typing, as a user's type checker sees it: the package carries ``py.typed``
(PEP 561), so mypy reads its annotations instead of treating every castate call as Any.

mypy runs on small user snippets with castate found the way an installed package is (on the
path, not as a source of the run): without ``py.typed`` it would skip castate and every
``assert_type`` below would fail with "Expression is of type Any".
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest

import castate

pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")

USER_CODE = """
from typing import Any, assert_type

import castate


async def main() -> None:
    async with castate.StateManager("./state") as sm:
        assert_type(await sm.save_session("run-1", {"step": 1}), str | None)
        assert_type(await sm.load_session("run-1"), dict[str, Any] | None)
        assert_type(await sm.create_checkpoint("run-1", "before_call"), str)
        assert_type(await sm.restore_checkpoint("run-1@before_call"), dict[str, Any])
        assert_type(await sm.list_sessions(), list[castate.SessionInfo])
        assert_type(await sm.list_checkpoints("run-1"), list[castate.CheckpointInfo])
        assert_type(await sm.diff("run-1~1", "run-1"), list[castate.Change])
        assert_type(await sm.reset_session(to="run-1@before_call"), castate.RestoreResult)
    with castate.SyncStateManager("./state") as ssm:  # the blocking API keeps the same types
        assert_type(ssm.save_session("run-1", {"step": 2}), str | None)
        assert_type(ssm.load_session("run-1"), dict[str, Any] | None)
        assert_type(ssm.create_checkpoint("run-1", "after", metadata={"k": 1}), str)
        assert_type(ssm.restore_checkpoint("run-1@after"), dict[str, Any])
        assert_type(ssm.list_checkpoints("run-1"), list[castate.CheckpointInfo])
        assert_type(ssm.last_seen("run-1"), str | None)
        with ssm.checkpointed("run-1", "risky") as cp:
            assert_type(cp, str)
"""

MISTAKE = """
import castate


async def main() -> None:
    sm = castate.StateManager("./state")
    await sm.save_session(42, {"step": 1})
    cp: int = await sm.create_checkpoint("run-1")
    castate.SyncStateManager("./state").create_checkpoint("run-1", nme="x")
"""


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """mypy on ``code`` as a user's module, castate on the path like an installed package."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "castate").symlink_to(Path(castate.__file__).parent, target_is_directory=True)
    user = tmp_path / "user.py"
    user.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MYPYPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--python-version", "3.11", str(user.name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_py_typed_ships_in_the_package():
    assert resources.files("castate").joinpath("py.typed").is_file()
    pyproject = (Path(castate.__file__).parent.parent / "pyproject.toml").read_text()
    assert '"castate" = ["py.typed"]' in pyproject  # the wheel's package data carries it


def test_users_mypy_sees_castates_return_types(tmp_path):
    run = _mypy(tmp_path, USER_CODE)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout


def test_users_mypy_reports_misuse_of_castates_api(tmp_path):
    run = _mypy(tmp_path, MISTAKE)
    assert run.returncode == 1, run.stdout + run.stderr
    assert 'Argument 1 to "save_session" of "StateManager" has incompatible type "int"; expected "str"' in run.stdout
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in run.stdout
    assert 'Unexpected keyword argument "nme"' in run.stdout  # the sync API keeps parameter names
