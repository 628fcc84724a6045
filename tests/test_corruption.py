"""Damaged store files: reads raise castate's errors naming what is damaged, never wrong data."""

from __future__ import annotations

import random
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

import castate
from castate.backends.local import packs
from castate.errors import (
    CastateError,
    CorruptFileError,
    CorruptObjectError,
    MissingObjectError,
    NotFoundError,
    UnsupportedFormatError,
)

T = TypeVar("T")


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
    scanned = packs.Pack(pack)
    packs.scan_pack(scanned)
    scanned.close()
    rec = scanned.records[sorted(scanned.records)[len(scanned.records) // 2]]
    data = bytearray(pack.read_bytes())
    data[rec.comp_start + rec.comp_len // 2] ^= 0xFF  # the compressed objects of a record in the middle
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


# -- every file: truncated, emptied, deleted; each pack record's table damaged ----------------------


def pack_ids(path: Path) -> dict[str, set[str]]:
    """The object ids (hex) each pack file holds, read before any damage."""
    out = {}
    for pack in (path / "packs").glob("*.pack"):
        p = packs.Pack(pack)
        packs.scan_pack(p)
        out[pack.name] = {oid.hex() for oid in p.entries}
        p.close()
    return out


def damages(file: Path, data: bytes) -> list[tuple[str, bytes | None]]:
    """(label, new content or None to delete) for one file."""
    out: list[tuple[str, bytes | None]] = [
        ("truncated to half", data[: len(data) // 2]),
        ("emptied", b""),
        ("deleted", None),
    ]
    if file.suffix == ".pack":  # the pack's index: each record's table of ids, offsets and lengths
        p = packs.Pack(file)
        packs.scan_pack(p)
        for rec_off in sorted(p.records):
            damaged = bytearray(data)
            damaged[rec_off + 8 + 40] ^= 0xFF  # inside the first table entry of the record
            out.append((f"table of record {rec_off} damaged", bytes(damaged)))
        p.close()
    return out


async def attempt(call: Awaitable[T]) -> T | CastateError:
    """The call's result, or the castate error it raised."""
    try:
        return await call
    except CastateError as exc:
        return exc


async def older_state(path: Path, loose: bool, history: set[bytes]) -> str:
    """A journal cut inside a record reads as a writer's torn last record: an older state of
    the store, never one it did not have (docs/reliability.md)."""
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=loose))) as sm:
        assert set((await sm.repository.list_refs()).values()) <= history
        for ref in await sm.repository.list_refs():
            await sm.repository.load(ref)  # every ref still loads
    return "older state"


def names_the_damage(exc: CastateError, file: Path, ids_in_file: set[str]) -> bool:
    if isinstance(exc, CorruptFileError):
        return exc.path == str(file) or file.name in exc.path
    if isinstance(exc, CorruptObjectError | MissingObjectError):
        return exc.object_id in ids_in_file
    return file.name in str(exc)


@pytest.mark.parametrize("loose", [False, True], ids=["packed", "loose"])
async def test_truncated_emptied_or_deleted_files_are_named_never_misread(tmp_path: Path, loose: bool) -> None:
    path = tmp_path / "store"
    expected, cp = await build_store(path, loose)
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=loose))) as sm:
        history = {e.new for e in await sm.repository.reflog() if e.new}
    in_pack = pack_ids(path)
    pristine = {p: p.read_bytes() for p in store_files(path)}
    outcomes: dict[str, int] = {}
    for file, data in pristine.items():
        ids = in_pack.get(file.name, set()) or (
            {file.parent.name + file.name} if file.parent.parent.name == "objects" else set()
        )
        for label, content in damages(file, data):
            if content is None:
                file.unlink()
            else:
                file.write_bytes(content)
            try:
                read = await attempt(read_back(path, loose, cp))
                if isinstance(read, NotFoundError):
                    assert file.name == "refs.journal", f"{file.name} {label}: a ref vanished"
                    outcome = await older_state(path, loose, history)
                elif isinstance(read, CastateError):
                    assert names_the_damage(read, file, ids), f"{file.name} {label}: {read!r} does not name it"
                    outcome = "named error"
                    sm = castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=loose)))
                    report = await attempt(sm.fsck(full=True, quarantine=False))
                    await sm.close()
                    if isinstance(report, CastateError):  # a store that cannot open: the same error
                        assert names_the_damage(report, file, ids), report
                    else:
                        bad = {p.id.hex() for p in report.problems + report.stored_corrupt}
                        assert not report.ok, f"fsck missed {file.name} {label}"
                        assert bad & ids or any(file.name in line for line in report.storage), report
                else:
                    head, old = read
                    if file.name == "refs.journal" and head != expected:
                        outcome = await older_state(path, loose, history)
                    else:
                        assert head == expected, f"wrong data after {file.name} {label}"
                        assert old == expected
                        outcome = "intact"
            finally:
                if (path / "quarantine").exists():
                    shutil.rmtree(path / "quarantine")
                file.write_bytes(data)
            kind = "loose object" if ids and not file.suffix else file.suffix or file.name
            key = f"{kind}: {label.split(' of ')[0]} -> {outcome}"
            outcomes[key] = outcomes.get(key, 0) + 1
    print("\n" + "\n".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))


async def test_a_missing_config_is_damage_not_a_foreign_directory(tmp_path: Path) -> None:
    """It used to say the directory is "not a castate store" and suggest `castate import`."""
    path = tmp_path / "store"
    await build_store(path)
    (path / "castate.json").unlink()
    with pytest.raises(CorruptFileError, match="config is missing") as info:
        await castate.StateManager(path).load_session("s")
    assert info.value.path == str(path / "castate.json")
    assert not (path / "castate.json").exists()  # never silently made a new store over the old one
