"""Importing a MARSYS FileStorageBackend directory: keys as MARSYS loads them, checkpoints deduplicated."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from castate.compat.marsys import MarsysStorageBackend
from castate.compat.marsys_import import cli_import_marsys, import_marsys_directory
from castate.errors import CastateError
from tests.test_compat_marsys import marsys_like_session

ROOT = Path(__file__).resolve().parents[1]


def write_marsys(path: Path, data: Any) -> int:
    """Write a file as MARSYS's FileStorageBackend.save does; returns its size."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)
    return path.stat().st_size


def marsys_directory(root: Path, checkpoints: int = 6) -> dict[str, Any]:
    """A MARSYS base_path with two sessions and checkpoints of the first; the files' JSON by key."""
    (root / "sessions").mkdir(parents=True)
    (root / "checkpoints").mkdir()
    files: dict[str, Any] = {}
    session = marsys_like_session(300)
    for i in range(checkpoints):  # checkpoints taken as the session grew, as MARSYS writes them
        body = marsys_like_session(250 + 10 * i)
        body["metadata"] = dict(body["metadata"], checkpoint_name=f"step{i}", checkpoint_time=f"2026-11-27T10:0{i}:00")
        key = f"checkpoint_s1_step{i}_{1795777000 + i}"
        write_marsys(root / "checkpoints" / f"{key}.json", body)
        files[key] = body
    write_marsys(root / "sessions" / "session_s1.json", session)
    files["session_s1"] = session
    other = {"session_id": "s2", "metadata": {"status": "running"}, "branches": {}}
    write_marsys(root / "sessions" / "session_s2.json", other)
    files["session_s2"] = other
    return files


async def test_import_keeps_every_key_and_deduplicates_checkpoints(tmp_path: Path) -> None:
    files = marsys_directory(tmp_path / "marsys")
    source_bytes = sum(p.stat().st_size for p in (tmp_path / "marsys").rglob("*.json"))
    report = await import_marsys_directory(tmp_path / "marsys", tmp_path / "store")
    assert report.ok, report.summary()
    assert sorted(report.imported) == sorted(files)
    assert report.source_bytes == source_bytes
    # seven near copies of one session: the store holds about one compressed copy
    assert report.store_bytes_added < source_bytes / 10, report.summary()
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        assert await fs.list_keys() == sorted(files)
        assert await fs.list_keys("checkpoint_s1_") == sorted(k for k in files if k.startswith("checkpoint_"))
        for key, body in files.items():
            assert await fs.load(key) == json.loads(json.dumps(body, default=str))


async def test_importing_again_changes_nothing(tmp_path: Path) -> None:
    marsys_directory(tmp_path / "marsys")
    await import_marsys_directory(tmp_path / "marsys", tmp_path / "store")
    again = await import_marsys_directory(tmp_path / "marsys", tmp_path / "store")
    assert again.imported == []
    assert len(again.unchanged) == 8
    assert again.objects_added == 0


async def test_checkpoint_objects_are_shared_on_import(tmp_path: Path) -> None:
    marsys_directory(tmp_path / "one", checkpoints=1)
    marsys_directory(tmp_path / "many", checkpoints=6)
    one = await import_marsys_directory(tmp_path / "one", tmp_path / "store-one")
    many = await import_marsys_directory(tmp_path / "many", tmp_path / "store-many")
    source_growth = many.source_bytes - one.source_bytes
    store_growth = many.store_bytes_added - one.store_bytes_added
    assert store_growth < source_growth / 20, (one.summary(), many.summary())


async def test_bad_files_are_reported_and_the_rest_imported(tmp_path: Path) -> None:
    root = tmp_path / "marsys"
    marsys_directory(root, checkpoints=1)
    (root / "sessions" / "session_broken.json").write_text('{"truncated": ')
    (root / "sessions" / "session_list.json").write_text("[1, 2]")
    (root / "sessions" / "session_nan.json").write_text('{"score": NaN}')  # imported: castate holds NaN
    (root / "sessions" / "session_huge.json").write_text('{"n": 123456789012345678901234567890}')
    (root / "sessions" / "checkpoint_misplaced_x_1.json").write_text("{}")
    (root / "checkpoints" / "notes.json").write_text("{}")
    (root / "sessions" / "README.txt").write_text("not a state")
    report = await import_marsys_directory(root, tmp_path / "store")
    assert not report.ok
    assert set(report.skipped) == {
        "sessions/session_broken.json",
        "sessions/session_list.json",
        "sessions/session_huge.json",
        "sessions/checkpoint_misplaced_x_1.json",
        "checkpoints/notes.json",
    }
    assert "not valid JSON" in report.skipped["sessions/session_broken.json"]
    assert "64-bit" in report.skipped["sessions/session_huge.json"]
    assert sorted(report.imported) == ["checkpoint_s1_step0_1795777000", "session_nan", "session_s1", "session_s2"]


async def test_no_overwrite_keeps_what_the_store_holds(tmp_path: Path) -> None:
    marsys_directory(tmp_path / "marsys", checkpoints=1)
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        await fs.save("session_s2", {"session_id": "s2", "newer": True})
        report = await import_marsys_directory(tmp_path / "marsys", fs, overwrite=False)
        assert list(report.skipped) == ["sessions/session_s2.json"]
        assert await fs.load("session_s2") == {"session_id": "s2", "newer": True}
        assert await fs.load("session_s1") is not None


async def test_a_directory_that_is_not_marsys_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CastateError, match="not a MARSYS state directory"):
        await import_marsys_directory(tmp_path / "empty", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_cli_function_and_module_entry_point(tmp_path: Path) -> None:
    marsys_directory(tmp_path / "marsys", checkpoints=2)
    out = io.StringIO()
    assert cli_import_marsys(str(tmp_path / "marsys"), str(tmp_path / "store"), out=out) == 0
    assert out.getvalue().startswith("imported 4 keys (0 already up to date)")
    assert cli_import_marsys(str(tmp_path / "nowhere"), str(tmp_path / "store2"), out=io.StringIO()) == 2
    (tmp_path / "marsys" / "sessions" / "session_bad.json").write_text("{")
    proc = subprocess.run(
        [sys.executable, "-m", "castate.migrate", "marsys", str(tmp_path / "marsys"), str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "imported 0 keys (4 already up to date)" in proc.stdout
    assert "skipped sessions/session_bad.json: not valid JSON" in proc.stdout


@pytest.mark.parametrize("module", ["castate.compat.marsys_import", "castate.migrate"])
def test_the_module_runs_at_its_path_and_its_old_one(tmp_path: Path, module: str) -> None:
    marsys_directory(tmp_path / "marsys", checkpoints=1)
    proc = subprocess.run(
        [sys.executable, "-m", module, "marsys", str(tmp_path / "marsys"), str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported 3 keys")
    bad = subprocess.run([sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert f"python -m {module}" in bad.stderr  # its usage names the path it ran as


def test_castate_command_imports_a_marsys_directory(tmp_path: Path) -> None:
    files = marsys_directory(tmp_path / "marsys", checkpoints=3)
    castate_cmd = Path(sys.executable).with_name("castate")
    store = tmp_path / "store"
    subprocess.run([str(castate_cmd), "--store", str(store), "init"], check=True, capture_output=True)
    proc = subprocess.run(
        [str(castate_cmd), "--store", str(store), "import-marsys", str(tmp_path / "marsys"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(report["imported"]) == sorted(files)
    assert report["ok"]
    keys = subprocess.run(
        [str(castate_cmd), "--store", str(store), "stats", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(keys.stdout)["objects"] > 0
