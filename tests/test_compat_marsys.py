"""castate behind MARSYS's storage interfaces, checked without marsys itself.

The dict backend must give back what MARSYS's ``json.dump(data, default=str)`` file backend
gives back; the bytes backend must behave as the tests of MARSYS's newer FileStorageBackend
expect (tests/coordination/state/test_storage.py on MARSYS main). Tests that run marsys's own
code live in test_compat_marsys_real.py.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from castate import LocalBackend, MemoryBackend
from castate.compat.marsys import MarsysBytesBackend, MarsysStorageBackend, marsys_json
from castate.errors import InvalidKeyError, KeyNotFoundError, StoreError, UnsupportedValueError
from castate.repository.packs import PackStore

ROOT = Path(__file__).resolve().parents[1]


class Color(enum.Enum):
    RED = "red"


class Status(enum.StrEnum):
    RUNNING = "running"


class Level(enum.IntEnum):
    HIGH = 3


class Opaque:
    def __str__(self) -> str:
        return "<opaque thing>"


def awkward_values() -> dict[str, Any]:
    return {
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
        "aware": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 1, 2),
        "raw": b"\x00\xffbytes",
        "tags": {"only-one"},
        "frozen": frozenset(["x"]),
        "color": Color.RED,
        "status": Status.RUNNING,
        "level": Level.HIGH,
        "pair": (1, "two", (3.5, None)),
        "keys": {7: "int", 2.5: "float", True: "bool", None: "none"},
        "money": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "thing": Opaque(),
        "nested": {"deep": [{"at": datetime.datetime(2020, 5, 6)}]},
        "unicode": "héllo ✓",
        "big": 2**63,
    }


async def test_values_load_as_marsys_json_dump_default_str_reads_them(tmp_path: Path) -> None:
    data = awkward_values()
    expected = json.loads(json.dumps(data, indent=2, default=str))  # what MARSYS's file backend loads
    assert expected["when"] == "2024-01-02 03:04:05.678901"
    assert expected["keys"] == {"7": "int", "2.5": "float", "true": "bool", "null": "none"}
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        await fs.save("session_s1", data)
        assert await fs.load("session_s1") == expected
    async with MarsysStorageBackend(tmp_path / "store") as fs:  # and from a fresh process's view
        loaded = await fs.load("session_s1")
        assert loaded == expected
        assert json.dumps(loaded, sort_keys=True) == json.dumps(expected, sort_keys=True)


async def test_save_serializes_at_call_time(tmp_path: Path) -> None:
    live = {"branches": {"main": {"steps": [1, 2]}}, "when": datetime.datetime(2024, 1, 1)}
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        await fs.save("session_a", live)
        live["branches"]["main"]["steps"].append(3)
        live["when"] = datetime.datetime(2030, 1, 1)
        assert await fs.load("session_a") == {"branches": {"main": {"steps": [1, 2]}}, "when": "2024-01-01 00:00:00"}


async def test_missing_keys_deletes_and_exists(tmp_path: Path) -> None:
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        assert await fs.load("session_nope") is None
        await fs.delete("session_nope")  # a missing key is fine
        assert not await fs.exists("session_nope")
        await fs.save("session_x", {"v": 1})
        assert await fs.exists("session_x")
        await fs.delete("session_x")
        assert await fs.load("session_x") is None


async def test_list_keys_exact_sorted_plain_prefix(tmp_path: Path) -> None:
    """As MARSYS's test_state_cleanup_and_expiration: exactly the saved keys, then what is left."""
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        now = time.time()
        for i in range(5):
            await fs.save(f"session-{i}", {"session_id": f"session-{i}", "created_at": now - i * 3600})
        assert len(await fs.list_keys()) == 5
        for key in await fs.list_keys():
            data = await fs.load(key)
            assert data is not None
            if time.time() - data["created_at"] > 2 * 3600:
                await fs.delete(key)
        assert await fs.list_keys() == ["session-0", "session-1"]
        await fs.save("checkpoint_s_1_name_1795777770", {"c": 1})
        await fs.save("session_x[1]", {"g": 1})  # glob characters are plain characters here
        await fs.save("team/alpha", {"slash": 1})
        assert await fs.list_keys() == [
            "checkpoint_s_1_name_1795777770",
            "session-0",
            "session-1",
            "session_x[1]",
            "team/alpha",
        ]
        assert await fs.list_keys("session_x[") == ["session_x[1]"]
        assert await fs.list_keys("checkpoint_") == ["checkpoint_s_1_name_1795777770"]
        assert await fs.list_keys("zzz") == []


async def test_values_castate_cannot_hold_raise_and_leave_the_store_intact(tmp_path: Path) -> None:
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        # NaN and infinities: MARSYS's json file holds NaN and Infinity, and so does castate (format 2).
        await fs.save("session_b", {"score": float("nan"), "limit": float("inf")})
        back = await fs.load("session_b")
        assert back["score"] != back["score"]
        assert back["limit"] == float("inf")
        await fs.save("session_a", {"ok": True})
        cyclic: dict[str, Any] = {}
        cyclic["self"] = cyclic
        with pytest.raises(UnsupportedValueError, match="Circular"):
            await fs.save("session_a", cyclic)
        with pytest.raises(UnsupportedValueError, match="keys must be"):
            await fs.save("session_a", {(1, 2): "tuple key"})
        with pytest.raises(UnsupportedValueError, match="takes a dict"):
            await fs.save("session_a", [1, 2])  # type: ignore[arg-type]
        assert await fs.load("session_a") == {"ok": True}


async def test_concurrent_load_increment_save_like_marsys(tmp_path: Path) -> None:
    """MARSYS's test_concurrent_state_access: 5 writers x 10 read-modify-write cycles on one key."""
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        await fs.save("shared", {"counter": 0})

        async def writer(i: int) -> None:
            for _ in range(10):
                data = await fs.load("shared")
                assert data is not None
                data["counter"] += 1
                data[f"writer_{i}"] = True
                await fs.save("shared", data)

        await asyncio.gather(*(writer(i) for i in range(5)))
        final = await fs.load("shared")
        assert final is not None
        assert final["counter"] >= 10
        assert any(final.get(f"writer_{i}") for i in range(5))


def marsys_like_session(messages: int) -> dict[str, Any]:
    """A stored MARSYS session: one branch whose memory holds ``messages`` messages."""
    memory = [{"role": "assistant", "content": f"message {i}: " + "lorem ipsum " * 30} for i in range(messages)]
    return {
        "session_id": "s1",
        "timestamp": 1795777770.25,
        "branches": {"main": {"id": "main", "state": {"status": "running", "current_step": messages}}},
        "active_branches": ["Task-7"],
        "completed_branches": ["main"],
        "waiting_branches": {},
        "branch_results": {"main": {"branch_id": "main", "branch_memory": {"Alpha": memory}}},
        "parent_child_map": {},
        "child_parent_map": {},
        "metadata": {"status": "running", "total_steps": messages},
        "checksum": "0" * 64,
    }


async def test_checkpoints_share_storage_with_their_session(tmp_path: Path) -> None:
    """MARSYS's create_checkpoint saves a near copy of the session: castate stores only the difference."""
    async with MarsysStorageBackend(tmp_path / "store") as fs:
        backend = fs.repository.backend
        assert isinstance(backend, PackStore)
        assert isinstance(backend.blobs, LocalBackend)  # stats measure the store's directory
        session = marsys_like_session(400)
        size = len(json.dumps(session, indent=2))
        await fs.save("session_s1", session)
        after_session = await backend.stats()
        for i in range(5):  # what MARSYS's StateManager.create_checkpoint writes
            copy = dict(await fs.load("session_s1") or {})
            copy["metadata"] = dict(copy["metadata"], checkpoint_name=f"cp{i}", checkpoint_time=f"2026-11-27T11:0{i}")
            await fs.save(f"checkpoint_s1_cp{i}_{1795777770 + i}", copy)
        after_checkpoints = await backend.stats()
        grown = after_checkpoints["bytes_apparent"] - after_session["bytes_apparent"]
        assert grown < 0.02 * 5 * size  # five copies of the session would be 5 x size
        assert after_checkpoints["objects"] - after_session["objects"] <= 5 * 3  # a root node and a commit each
        for i in range(5):
            assert (await fs.load(f"checkpoint_s1_cp{i}_{1795777770 + i}") or {})["branch_results"] == json.loads(
                json.dumps(session["branch_results"])
            )


# -- the bytes interface -----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_write_then_read_returns_the_same_bytes(tmp_path: Path) -> None:
    async with MarsysBytesBackend(tmp_path / "store") as store:
        await store.write("sess-1/snapshot.json", b'{"a": 1}')
        assert await store.read("sess-1/snapshot.json") == b'{"a": 1}'
        await store.write("sess-1/snapshot.json", b"\x00not json")  # overwrites
        assert await store.read("sess-1/snapshot.json") == b"\x00not json"
    async with MarsysBytesBackend(tmp_path / "store") as store:  # durable across reopening
        assert await store.read("sess-1/snapshot.json") == b"\x00not json"


async def test_delete_then_read_raises_file_not_found_and_delete_is_idempotent() -> None:
    async with MarsysBytesBackend(MemoryBackend()) as store:
        await store.write("x/snapshot.json", b"{}")
        await store.delete("x/snapshot.json")
        with pytest.raises(FileNotFoundError):
            await store.read("x/snapshot.json")
        with pytest.raises(KeyNotFoundError, match=r"x/snapshot\.json"):
            await store.read("x/snapshot.json")
        await store.delete("x/snapshot.json")
        await store.delete("never/written")


async def test_list_with_metadata_sizes_and_aware_times() -> None:
    clock = Clock(1_800_000_000.0)
    async with MarsysBytesBackend(MemoryBackend(), clock=clock) as store:
        await store.write("b/snapshot.json", b"xy")
        await store.write("a/snapshot.json", b"abc")
        entries = await store.list_with_metadata()
        assert [e.key for e in entries] == ["a/snapshot.json", "b/snapshot.json"]
        assert [e.size_bytes for e in entries] == [3, 2]
        assert all(e.modified_at.tzinfo is not None for e in entries)
        assert entries[0].modified_at == datetime.datetime.fromtimestamp(1_800_000_000.0, datetime.UTC)
        assert {f.name for f in __import__("dataclasses").fields(entries[0])} == {"key", "size_bytes", "modified_at"}


async def test_expire_removes_old_keys_only_and_leaves_bytes_to_gc(tmp_path: Path) -> None:
    day = 86400.0
    clock = Clock(1_800_000_000.0)
    async with MarsysBytesBackend(tmp_path / "store", clock=clock) as store:
        await store.write("old/snapshot.json", json.dumps({"v": "old " * 100}).encode())
        clock.now += 10 * day
        await store.write("new/snapshot.json", json.dumps({"v": "new " * 100}).encode())
        objects = (await store.repository.backend.stats())["objects"]
        clock.now += 25 * day  # old is 35 days old, new 25
        assert await store.expire_older_than(datetime.timedelta(days=30)) == 1
        assert [e.key for e in await store.list_with_metadata()] == ["new/snapshot.json"]
        with pytest.raises(FileNotFoundError):
            await store.read("old/snapshot.json")
        assert (await store.repository.backend.stats())["objects"] == objects  # refs only; gc frees bytes
        assert await store.expire_older_than(datetime.timedelta(days=30)) == 0
        log = await store.repository.reflog("bytes/old%2Fsnapshot.json")
        assert log[-1].new is None
        assert "expire" in log[-1].message


async def test_rewriting_equal_bytes_refreshes_the_write_time() -> None:
    clock = Clock(1_800_000_000.0)
    async with MarsysBytesBackend(MemoryBackend(), clock=clock) as store:
        await store.write("k", b'{"same": true}')
        clock.now += 100.0
        await store.write("k", b'{"same": true}')
        (entry,) = await store.list_with_metadata()
        assert entry.modified_at.timestamp() == pytest.approx(1_800_000_100.0)
        clock.now += 50.0
        assert await store.expire_older_than(datetime.timedelta(seconds=60)) == 0
        assert await store.read("k") == b'{"same": true}'


@pytest.mark.parametrize("key", ["/etc/passwd", "../escape/snapshot.json", "a/../../b", "", ".", "./"])
async def test_keys_that_escape_raise_value_error(key: str) -> None:
    async with MarsysBytesBackend(MemoryBackend()) as store:
        with pytest.raises(ValueError, match=r"invalid key"):
            await store.write(key, b"x")
        with pytest.raises(ValueError, match=r"invalid key"):
            await store.read(key)
        with pytest.raises(ValueError, match=r"invalid key"):
            await store.delete(key)
        assert await store.list_with_metadata() == []


async def test_keys_name_entries_as_paths_do() -> None:
    async with MarsysBytesBackend(MemoryBackend()) as store:
        await store.write("a//b/./snapshot.json", b"1")
        assert await store.read("a/b/snapshot.json") == b"1"
        assert [e.key for e in await store.list_with_metadata()] == ["a/b/snapshot.json"]
        with pytest.raises(InvalidKeyError):
            await store.write(7, b"x")  # type: ignore[arg-type]
        with pytest.raises(UnsupportedValueError):
            await store.write("k", "text")  # type: ignore[arg-type]


async def test_a_failed_write_leaves_the_previous_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    async with MarsysBytesBackend(MemoryBackend()) as store:
        await store.write("k/snapshot.json", b'{"v": 1}')

        async def broken(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(store.repository.backend, "commit", broken)
        with pytest.raises(OSError, match="disk full"):
            await store.write("k/snapshot.json", b'{"v": 2}')
        monkeypatch.undo()
        assert await store.read("k/snapshot.json") == b'{"v": 1}'


def snapshot_json(messages: int) -> bytes:
    """A paused-session snapshot as MARSYS main writes it: pydantic's model_dump_json(indent=2)."""
    doc = {
        "framework_version": "0.3.0",
        "session_id": "sess-1",
        "topology_digest": "ab" * 32,
        "created_at": "2026-11-27T11:00:00Z",
        "paused_at": "2026-11-27T12:00:00Z",
        "branches": {
            "main": {
                "branch_id": "main",
                "status": "paused",
                "memory": [
                    {"role": "assistant", "content": f"step {i}: " + "result text " * 40, "name": "Alpha"}
                    for i in range(messages)
                ],
            }
        },
        "runnable": ["main"],
        "max_steps": 200,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


async def test_successive_snapshots_share_their_unchanged_parts(tmp_path: Path) -> None:
    async with MarsysBytesBackend(tmp_path / "store") as store:
        backend = store.repository.backend
        first = snapshot_json(300)
        await store.write("sess-1/snapshot.json", first)
        before = (await backend.stats())["bytes_apparent"]
        second = snapshot_json(301)
        await store.write("sess-1/snapshot.json", second)
        grown = (await backend.stats())["bytes_apparent"] - before
        assert await store.read("sess-1/snapshot.json") == second
        stored = await store.repository.load("bytes/sess-1%2Fsnapshot.json")
        assert stored["format"] == "json"
        assert grown < len(second) * 0.05, (grown, len(second))


async def test_a_ref_that_holds_something_else_is_a_clear_error() -> None:
    async with MarsysBytesBackend(MemoryBackend()) as store:
        await store.repository.save("bytes/k", {"not": "a payload"})
        with pytest.raises(StoreError, match="not a byte payload"):
            await store.read("k")


def test_marsys_json_is_json_roundtrip() -> None:
    data = awkward_values()
    assert marsys_json(data) == json.loads(json.dumps(data, default=str))


def test_importing_the_adapters_does_not_import_marsys_and_works_without_it() -> None:
    code = (
        "import sys, asyncio, tempfile\n"
        "import castate, castate.compat.marsys as m, castate.migrate\n"
        "assert 'marsys' not in sys.modules, 'imported marsys eagerly'\n"
        "sys.modules['marsys'] = None  # as if marsys were not installed\n"
        "assert m.marsys_storage_interface() is None\n"
        "assert m.MarsysStorageBackend.__bases__ == (m.MarsysJsonStorage,)\n"
        "async def main():\n"
        "    async with m.MarsysStorageBackend(tempfile.mkdtemp()) as fs:\n"
        "        await fs.save('session_a', {'v': {1, 2}})\n"
        "        print(await fs.load('session_a'))\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'v': '{1, 2}'}"
