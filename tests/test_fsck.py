"""fsck: a clean store passes; missing and corrupt objects are found, named with the refs they
damage, and corrupt ones quarantined (never deleted); --full counts dangling objects."""

from __future__ import annotations

from pathlib import Path

import castate
from castate.codec import encode_frame, object_id
from castate.codec.objects import KIND_STR
from castate.repository.snapshot import fetch_tree
from tests.journal_support import volume_records
from tests.memory_objects import MemoryObjects


def state(tag: str) -> dict[str, object]:
    return {"tag": tag, "doc": f"{tag} document " * 300, "items": [f"{tag} item {i} " * 10 for i in range(200)]}


async def test_a_clean_store_passes() -> None:
    sm = castate.StateManager(MemoryObjects())
    await sm.save_session("a", state("a"))
    await sm.create_checkpoint("a", "cp")
    report = await sm.fsck()
    assert report.ok
    assert report.refs == 2
    assert report.reachable > 3
    full = await sm.fsck(full=True)
    assert full.ok
    assert full.dangling == 0
    assert full.stored_checked == report.reachable


async def test_missing_object_names_the_damaged_refs() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    await sm.save_session("a", state("a"))
    await sm.save_session("b", state("b"))
    cp = await sm.create_checkpoint("a", "cp")
    root = (await sm.repository.resolve("sessions/a")).root
    victim = next(o for o in await fetch_tree(backend, root) if o != root)
    await backend.delete_objects([victim])
    report = await sm.fsck()
    assert not report.ok
    assert [(p.id, p.what) for p in report.problems] == [(victim, "missing")]
    assert set(report.damaged_refs) == {"sessions/a", f"checkpoints/{cp}"}
    assert report.damaged_refs["sessions/a"] == [victim.hex()]


async def test_corrupt_object_is_quarantined_and_a_new_save_heals_it() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    await sm.save_session("a", state("a"))
    root = (await sm.repository.resolve("sessions/a")).root
    victim = next(o for o in await fetch_tree(backend, root) if o != root)
    frame, t = backend._objects[victim]
    backend._objects[victim] = (frame[:-1] + bytes([frame[-1] ^ 1]), t)
    report = await sm.fsck()
    assert [(p.id, p.what) for p in report.problems] == [(victim, "corrupt")]
    assert report.quarantined == 1
    assert backend.quarantine[victim] != frame  # kept as found, for inspection
    assert victim not in await backend.has_objects([victim])
    # The content is still known to the writer: a fresh save writes a good copy again.
    fresh = castate.StateManager(backend)
    await fresh.save_session("a2", state("a"))
    assert (await sm.fsck()).ok
    assert await sm.load_session("a") == state("a")


async def test_full_mode_counts_dangling_and_finds_corrupt_unreachable_objects() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    await sm.save_session("a", {"x": 1})
    loose = [
        (object_id(KIND_STR, f"dangling {i}".encode()), encode_frame(KIND_STR, f"dangling {i}".encode()))
        for i in range(3)
    ]
    await backend.put_objects(loose)
    bad_id = object_id(KIND_STR, b"bad")
    await backend.put_objects([(bad_id, encode_frame(KIND_STR, b"not bad"))])
    quick = await sm.fsck()
    assert quick.ok
    assert quick.dangling == 0
    report = await sm.fsck(full=True, quarantine=False)
    assert report.dangling == 3
    assert [p.id for p in report.stored_corrupt] == [bad_id]
    assert not report.ok
    assert report.quarantined == 0
    assert await backend.has_objects([bad_id]) == {bad_id}


async def test_local_pack_damage_is_reported(store_path: Path) -> None:
    async with castate.StateManager(castate.FileStorageBackend(store_path)) as sm:
        for i in range(3):
            await sm.save_session(f"s{i}", state(f"s{i}"))
    volume = store_path / "volumes" / "00000001.vol"
    name, start, length = next(r for r in volume_records(volume) if r[0].startswith("packs/"))  # the first save's
    data = bytearray(volume.read_bytes())
    data[start + length // 2] ^= 0xFF  # inside the pack's compressed body
    volume.write_bytes(bytes(data))
    async with castate.StateManager(castate.LocalBackend(store_path)) as sm:
        report = await sm.fsck(full=True)
        assert not report.ok
        assert any("blake3" in line and name in line for line in report.storage), report.storage
        assert set(report.damaged_refs) == {"sessions/s0"}  # the first save's objects cannot be read
