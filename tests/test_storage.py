"""FileStorageBackend: the dict storage interface over a castate store."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

import castate
from castate.errors import InvalidKeyError, StoreError, UnsupportedValueError


async def test_save_load_delete_exists(store_path: Path) -> None:
    async with castate.FileStorageBackend(store_path) as fs:
        assert await fs.load("session_a") is None
        assert not await fs.exists("session_a")
        await fs.save("session_a", {"x": 1})
        assert await fs.exists("session_a")
        assert await fs.load("session_a") == {"x": 1}
        await fs.save("session_a", {"x": 2})
        assert await fs.load("session_a") == {"x": 2}
        await fs.delete("session_a")
        await fs.delete("session_a")  # a missing key is fine
        assert await fs.load("session_a") is None


async def test_list_keys_returns_only_user_keys_sorted(store_path: Path) -> None:
    async with castate.FileStorageBackend(store_path) as fs:
        for key in ["session-3", "session-1", "checkpoint_s1_a_1", "session-2", "other/with/slashes", "x[1]"]:
            await fs.save(key, {"k": key})
        assert await fs.list_keys() == sorted(
            ["session-3", "session-1", "checkpoint_s1_a_1", "session-2", "other/with/slashes", "x[1]"]
        )
        assert await fs.list_keys("session-") == ["session-1", "session-2", "session-3"]
        assert await fs.list_keys("x[") == ["x[1]"]
        assert await fs.list_keys("zzz") == []
        assert len(await fs.list_keys()) == 6


async def test_last_writer_wins_between_two_backends(store_path: Path) -> None:
    a = castate.FileStorageBackend(store_path)
    b = castate.FileStorageBackend(store_path)
    try:
        await a.save("k", {"v": "a1"})
        await b.save("k", {"v": "b1"})
        await a.save("k", {"v": "a2"})
        assert await b.load("k") == {"v": "a2"}
    finally:
        await a.close()
        await b.close()


async def test_data_is_serialized_at_save_time(store_path: Path) -> None:
    async with castate.FileStorageBackend(store_path) as fs:
        data = {"items": [1, 2], "nested": {"n": 1}}
        await fs.save("k", data)
        data["items"].append(3)
        data["nested"]["n"] = 99
        assert await fs.load("k") == {"items": [1, 2], "nested": {"n": 1}}


async def test_unsupported_values_raise_and_leave_the_store_intact(store_path: Path) -> None:
    async with castate.FileStorageBackend(store_path) as fs:
        await fs.save("k", {"ok": True})
        with pytest.raises(UnsupportedValueError, match=r"state\['when'\]"):
            await fs.save("k", {"when": object()})
        with pytest.raises(UnsupportedValueError):
            await fs.save("k", ["not", "a", "dict"])  # type: ignore[arg-type]
        assert await fs.load("k") == {"ok": True}


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


async def test_default_hook(store_path: Path) -> None:
    """default= converts what is outside the value domain; a datetime is inside it (format 2)."""
    async with castate.FileStorageBackend(store_path, default=str) as fs:
        when = datetime.datetime(2024, 1, 1, 9, 30)
        await fs.save("k", {"when": when, "thing": _Opaque()})
        assert await fs.load("k") == {"when": when, "thing": "opaque"}


async def test_bad_keys(store_path: Path) -> None:
    async with castate.FileStorageBackend(store_path) as fs:
        for key in ["", "x" * 5000, "bad \udc80"]:
            with pytest.raises(InvalidKeyError):
                await fs.save(key, {"a": 1})
        with pytest.raises(InvalidKeyError):
            await fs.save(123, {"a": 1})  # type: ignore[arg-type]
        assert await fs.list_keys() == []


async def test_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "session_a.json").write_text("{}")
    fs = castate.FileStorageBackend(tmp_path)
    with pytest.raises(StoreError, match="not a castate store"):
        await fs.load("a")


async def test_concurrent_load_modify_save_loops_in_one_process(store_path: Path) -> None:
    """Five tasks increment a counter under one key (MARSYS's own concurrency test shape)."""
    import asyncio

    async with castate.FileStorageBackend(store_path) as fs:
        await fs.save("counter", {"n": 0, "writers": {}})

        async def writer(i: int) -> None:
            for _ in range(10):
                data = await fs.load("counter")
                assert data is not None
                data["n"] += 1
                data["writers"][f"w{i}"] = True
                await fs.save("counter", data)

        await asyncio.gather(*(writer(i) for i in range(5)))
        final = await fs.load("counter")
        assert final is not None
        assert final["n"] >= 10  # last writer wins between load and save, as with files
        assert len(await fs.repository.reflog("kv/counter")) >= 10
