"""Damaged store files: reads raise castate's errors naming what is damaged, never wrong data."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

import castate
from castate.errors import CastateError, CorruptFileError, CorruptObjectError, UnsupportedFormatError


def make_state(step: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"message {i} " * 25} for i in range(step * 40)],
        "doc": "long document " * 400 + str(step),
        "raw": bytes(range(256)) * 3,
        "step": step,
    }


async def build_store(path: Path, loose: bool = False) -> tuple[dict[str, Any], str]:
    sm = castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=loose)))
    for step in range(1, 6):
        await sm.save_session("s", make_state(step))
        cp = await sm.create_checkpoint("s", f"step{step}")
    await sm.close()
    return make_state(5), cp


async def read_back(path: Path, loose: bool, cp: str) -> tuple[Any, Any]:
    sm = castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=loose)))
    try:
        return await sm.load_session("s"), await sm.restore_checkpoint(cp)
    finally:
        await sm.close()


def store_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.parent.name != "locks")


@pytest.mark.parametrize("loose", [False, True], ids=["packed", "loose"])
async def test_flipped_bytes_never_return_wrong_data(tmp_path: Path, loose: bool) -> None:
    path = tmp_path / "store"
    expected, cp = await build_store(path, loose)
    pristine = {p: p.read_bytes() for p in store_files(path)}
    rng = random.Random(1234)
    outcomes = {"intact": 0, "error": 0}
    for file, data in pristine.items():
        positions = {0, len(data) - 1, len(data) // 2, *(rng.randrange(len(data)) for _ in range(3))}
        for pos in sorted(positions):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << rng.randrange(8)
            file.write_bytes(bytes(damaged))
            try:
                head, old = await read_back(path, loose, cp)
            except CastateError:
                outcomes["error"] += 1
            else:
                assert head == expected, f"wrong data after flipping {file.name}[{pos}]"
                assert old == expected
                outcomes["intact"] += 1
            finally:
                file.write_bytes(data)
    assert outcomes["error"] > 0


async def test_damaged_pack_data_names_the_object(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await build_store(path)
    (pack,) = (path / "packs").glob("*.pack")
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    sm = castate.StateManager(path)
    try:
        with pytest.raises(CastateError) as info:
            await sm.load_session("s")
        assert isinstance(info.value, CorruptObjectError | CorruptFileError)
        assert "corrupt" in str(info.value)
    finally:
        await sm.close()


async def test_damaged_loose_object_names_the_object(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await build_store(path, loose=True)
    repo = castate.Repository(castate.LocalBackend(path, loose=True))
    head = await repo.head("sessions/s")
    root = (await repo.read_commit(head)).root.hex()
    await repo.close()
    victim = path / "objects" / root[:2] / root[2:]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    sm = castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=True)))
    try:
        with pytest.raises(CorruptObjectError) as info:
            await sm.load_session("s")
        assert info.value.object_id == victim.parent.name + victim.name
    finally:
        await sm.close()


async def test_a_store_from_a_newer_castate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await build_store(path)
    config = path / "castate.json"
    meta = orjson.loads(config.read_bytes())
    meta["version"] = 99
    config.write_bytes(orjson.dumps(meta))
    with pytest.raises(UnsupportedFormatError, match="version 99"):
        await castate.StateManager(path).load_session("s")


async def test_a_damaged_config_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await build_store(path)
    (path / "castate.json").write_bytes(b"{ not json")
    with pytest.raises(CorruptFileError, match=r"castate\.json"):
        await castate.StateManager(path).load_session("s")


async def test_a_missing_ref_journal_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await build_store(path)
    (path / "refs.journal").unlink()
    with pytest.raises(CorruptFileError, match="journal"):
        await castate.StateManager(path).load_session("s")
