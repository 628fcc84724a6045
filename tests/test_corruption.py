"""Damaged store files: reads raise castate's errors naming what is damaged, never wrong data.

The tests that damage every file run on an encrypted store too (tests/encrypted_support.py);
tests/test_crypto_damage.py damages an encrypted store's blobs below the backend's own checks."""

from __future__ import annotations

import random
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

import castate
from castate.backends.local import volumes
from castate.errors import (
    CastateError,
    CorruptFileError,
    CorruptObjectError,
    MissingObjectError,
    NotFoundError,
    UnsupportedFormatError,
)
from tests.encrypted_support import ENCRYPTION, env_key, is_encrypted, use_encryption

T = TypeVar("T")


def make_state(step: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"message {i} " * 25} for i in range(step * 40)],
        "doc": "long document " * 400 + str(step),
        "raw": bytes(range(256)) * 3,
        "step": step,
    }


def backend(path: Path) -> castate.LocalBackend:
    return castate.LocalBackend(path, volume_size=16 << 10)  # small volumes: several files to damage


async def build_store(path: Path) -> tuple[dict[str, Any], str]:
    sm = castate.StateManager(castate.Repository(backend(path), key=env_key()))  # CASTATE_KEY: encrypted
    for step in range(1, 6):
        await sm.save_session("s", make_state(step))
        cp = await sm.create_checkpoint("s", f"step{step}")
    await sm.close()
    return make_state(5), cp


async def read_back(path: Path, cp: str) -> tuple[Any, Any]:
    sm = castate.StateManager(castate.Repository(backend(path)))
    try:
        return await sm.load_session("s"), await sm.restore_checkpoint(cp)
    finally:
        await sm.close()


def store_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.parent.name != "locks")


@ENCRYPTION
async def test_flipped_bytes_never_return_wrong_data(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    path = tmp_path / "store"
    expected, cp = await build_store(path)
    assert await is_encrypted(path) == encrypted
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
                head, old = await read_back(path, cp)
            except CastateError:
                outcomes["error"] += 1
            else:
                assert head == expected, f"wrong data after flipping {file.name}[{pos}]"
                assert old == expected
                outcomes["intact"] += 1
            finally:
                file.write_bytes(data)
    assert outcomes["error"] > 0


def records(volume: Path) -> list[tuple[int, str, int]]:
    """(record offset, blob name, data offset) of each blob record in a volume file."""
    data = volume.read_bytes()
    out = []
    pos = data.find(volumes.REC_MAGIC, len(volumes.HEADER))
    while pos >= 0:
        nlen = int.from_bytes(data[pos + 4 : pos + 6], "little")
        size = int.from_bytes(data[pos + 6 : pos + 14], "little")
        start = pos + 46 + nlen
        out.append((pos, data[pos + 46 : start].decode(), start))
        pos = data.find(volumes.REC_MAGIC, start + size)
    return out


@ENCRYPTION
async def test_damaged_pack_data_names_the_object(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    path = tmp_path / "store"
    await build_store(path)
    volume = sorted((path / "volumes").glob("*.vol"))[0]
    (_, name, start), *_ = [r for r in records(volume) if r[1].startswith("packs/")]
    data = bytearray(volume.read_bytes())
    data[start + 40] ^= 0xFF  # inside the first pack blob's compressed objects
    volume.write_bytes(bytes(data))
    sm = castate.StateManager(path)
    try:
        with pytest.raises(CastateError) as info:
            await sm.load_session("s")
        assert isinstance(info.value, CorruptObjectError | CorruptFileError)
        assert "corrupt" in str(info.value)
        report = await sm.fsck(full=True, quarantine=False)
        assert any(name in line and volume.name in line for line in report.storage), report.storage
    finally:
        await sm.close()


async def test_a_record_that_frames_another_blob_is_refused_naming_volume_and_blob(tmp_path: Path) -> None:
    """A record's name is checked against the place the journal gives: bytes moved or overwritten
    in a volume are never returned as another blob."""
    path = tmp_path / "store"
    await build_store(path)
    volume = sorted((path / "volumes").glob("*.vol"))[0]
    (pos, name, _), *_ = records(volume)
    data = bytearray(volume.read_bytes())
    data[pos + 50] ^= 0x01  # a letter of the blob's name inside its record
    volume.write_bytes(bytes(data))
    store = castate.LocalBackend(path)
    await store.open()
    try:
        with pytest.raises(CorruptFileError, match="frames another blob") as info:
            await store.get_blobs([name])
        assert info.value.path == str(volume)
        assert name in str(info.value)
    finally:
        await store.close()


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


async def object_ids(path: Path) -> set[str]:
    """Every object id (hex) the store holds, read before any damage: a volume may hold any of them."""
    repo = castate.Repository(backend(path))
    await repo.open()
    try:
        return {info.id.hex() async for info in repo.backend.iter_objects()}
    finally:
        await repo.close()


def damages(file: Path, data: bytes) -> list[tuple[str, bytes | None]]:
    """(label, new content or None to delete) for one file."""
    out: list[tuple[str, bytes | None]] = [
        ("truncated to half", data[: len(data) // 2]),
        ("emptied", b""),
        ("deleted", None),
    ]
    if file.suffix == ".vol":  # each record's frame: its name no longer matches the journal's place
        for pos, _, _ in records(file):
            damaged = bytearray(data)
            damaged[pos + 47] ^= 0xFF
            out.append((f"frame of record {pos} damaged", bytes(damaged)))
    return out


async def attempt(call: Awaitable[T]) -> T | CastateError:
    """The call's result, or the castate error it raised."""
    try:
        return await call
    except CastateError as exc:
        return exc


async def older_state(path: Path, history: set[bytes]) -> str:
    """A journal cut inside a record reads as a writer's torn last record: an older state of
    the store, never one it did not have (docs/reliability.md)."""
    async with castate.StateManager(castate.Repository(backend(path))) as sm:
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


@ENCRYPTION
async def test_truncated_emptied_or_deleted_files_are_named_never_misread(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)
    path = tmp_path / "store"
    expected, cp = await build_store(path)
    assert await is_encrypted(path) == encrypted
    async with castate.StateManager(castate.Repository(backend(path))) as sm:
        history = {e.new for e in await sm.repository.reflog() if e.new}
    stored = await object_ids(path)
    pristine = {p: p.read_bytes() for p in store_files(path)}
    outcomes: dict[str, int] = {}
    for file, data in pristine.items():
        ids = stored if file.suffix == ".vol" else set()
        for label, content in damages(file, data):
            if content is None:
                file.unlink()
            else:
                file.write_bytes(content)
            try:
                read = await attempt(read_back(path, cp))
                if isinstance(read, NotFoundError):
                    assert file.name == "refs.journal", f"{file.name} {label}: a ref vanished"
                    outcome = await older_state(path, history)
                elif isinstance(read, CastateError):
                    assert names_the_damage(read, file, ids), f"{file.name} {label}: {read!r} does not name it"
                    outcome = "named error"
                    sm = castate.StateManager(castate.Repository(backend(path)))
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
                        outcome = await older_state(path, history)
                    else:
                        assert head == expected, f"wrong data after {file.name} {label}"
                        assert old == expected
                        outcome = "intact"
            finally:
                if (path / "quarantine").exists():
                    shutil.rmtree(path / "quarantine")
                file.write_bytes(data)
            kind = file.suffix or file.name
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
