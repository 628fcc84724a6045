"""packs/<name>.idx: a cache of a pack's scan that an open may start from, never trusted over the pack.

Each test compares what a backend learns of a pack with an index in some state (intact,
stale, damaged, foreign, missing, over a shortened pack) with a fresh scan of the same pack
file: the records, chains and object places must be the same, and every object must read
back byte for byte.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from castate.backends import LocalBackend
from castate.backends.local import packidx, packs
from castate.codec.objects import KIND_STR, encode_frame, object_id
from castate.errors import CorruptObjectError

Batch = list[tuple[bytes, bytes]]


def batch(step: int, n: int = 5) -> Batch:
    out = []
    for i in range(n):
        content = (f"step {step} object {i} " + "shared text " * 30).encode()
        out.append((object_id(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)))
    return out


async def write(path: Path, steps: range, *, close: bool = True) -> tuple[LocalBackend, list[Batch]]:
    b = LocalBackend(path, pack_index=True)
    await b.open()
    batches = [batch(s) for s in steps]
    for one in batches:
        await b.put_objects(one, stream="s")
    if close:
        await b.close()
    return b, batches


def only_pack(path: Path) -> Path:
    (pack,) = (path / "packs").glob("*.pack")
    return pack


def scanned(pack_path: Path) -> packs.Pack:
    pack = packs.Pack(pack_path)
    packs.scan_pack(pack)
    pack.close()
    return pack


def same_as_scan(got: packs.Pack, pack_path: Path) -> None:
    fresh = scanned(pack_path)
    assert got.records == fresh.records
    assert got.chains == fresh.chains
    assert got.entries == fresh.entries
    assert got.scanned == fresh.scanned
    assert got.damaged == fresh.damaged


class HeadReads:
    """Counts record heads parsed from pack files (what an index saves an open)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = packs._read_head

        def counting(*args: object, **kwargs: object) -> object:
            self.count += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(packs, "_read_head", counting)


async def opened_pack(path: Path) -> tuple[LocalBackend, packs.Pack]:
    b = LocalBackend(path)
    await b.open()
    (pack,) = b._packs.values()
    return b, pack


async def reads_back(b: LocalBackend, batches: list[Batch]) -> None:
    want = {oid: frame for one in batches for oid, frame in one}
    got = await b.get_objects(list(want))
    assert {oid: bytes(frame) for oid, frame in got.items()} == want


async def test_an_open_reads_the_index_instead_of_scanning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, batches = await write(tmp_path, range(40))
    pack_path = only_pack(tmp_path)
    assert packidx.path_of(pack_path).exists()  # written when the writer closed
    heads = HeadReads(monkeypatch)
    b, pack = await opened_pack(tmp_path)
    try:
        assert heads.count == 0
        assert pack.indexed == len(pack.entries) == 200
        same_as_scan(pack, pack_path)
        await reads_back(b, batches)
    finally:
        await b.close()


async def test_a_writer_keeps_its_index_within_a_fifth_of_its_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packidx, "MIN_NEW", 10)
    writer, batches = await write(tmp_path, range(60), close=False)
    try:
        pack_path = only_pack(tmp_path)
        index = packs.Pack(pack_path)
        assert packidx.load(index)  # written while the writer still appends
        assert len(index.entries) >= 0.8 * 300
        heads = HeadReads(monkeypatch)
        reader, pack = await opened_pack(tmp_path)
        try:
            assert heads.count <= (300 - len(index.entries)) // 5 + 1  # only the records past the index
            same_as_scan(pack, pack_path)
            await reads_back(reader, batches)
        finally:
            await reader.close()
    finally:
        await writer.close()


async def test_records_past_a_stale_index_are_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packidx, "MIN_NEW", 1 << 30)  # no index but the ones this test asks for
    writer, first = await write(tmp_path, range(10), close=False)
    assert writer._pack is not None
    assert packidx.write(writer._pack)
    pack_path = only_pack(tmp_path)
    stale = packidx.path_of(pack_path).read_bytes()
    more = [batch(s) for s in range(10, 20)]
    for one in more:
        await writer.put_objects(one, stream="s")
    await writer.close()
    # The index as a writer killed after those 10 saves left it.
    packidx.path_of(pack_path).write_bytes(stale)
    heads = HeadReads(monkeypatch)
    b, pack = await opened_pack(tmp_path)
    try:
        assert heads.count == 10
        same_as_scan(pack, pack_path)
        await reads_back(b, first + more)
    finally:
        await b.close()


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty", "foreign", "pack-shortened", "newer-version"])
async def test_a_damaged_foreign_or_outgrown_index_is_ignored(tmp_path: Path, how: str) -> None:
    _, batches = await write(tmp_path / "a", range(12))
    pack_path = only_pack(tmp_path / "a")
    idx = packidx.path_of(pack_path)
    data = bytearray(idx.read_bytes())
    if how == "flipped":
        data[len(data) // 2] ^= 0x01
    elif how == "truncated":
        del data[-40:]
    elif how == "empty":
        data = bytearray()
    elif how == "foreign":  # the index of another pack of the same shape
        await write(tmp_path / "b", range(12, 24))
        data = bytearray(packidx.path_of(only_pack(tmp_path / "b")).read_bytes())
    elif how == "pack-shortened":  # a pack cut below what its index covers (restored from an old copy)
        with open(pack_path, "r+b") as f:
            f.truncate(pack_path.stat().st_size - 100)
    elif how == "newer-version":
        data[8] = packidx.VERSION + 1
    idx.write_bytes(bytes(data))
    b, pack = await opened_pack(tmp_path / "a")
    try:
        same_as_scan(pack, pack_path)
        if how == "pack-shortened":
            await reads_back(b, batches[:-1])
            assert await b.get_objects([oid for oid, _ in batches[-1]]) == {}
        else:
            await reads_back(b, batches)
    finally:
        await b.close()


async def test_damage_after_indexing_keeps_reads_right_and_fsck_names_it(tmp_path: Path) -> None:
    _, batches = await write(tmp_path, range(8))
    pack_path = only_pack(tmp_path)
    victim = sorted(scanned(pack_path).records)[3]
    data = bytearray(pack_path.read_bytes())
    data[victim + 12] ^= 0xFF  # inside a record head, after the index listed it
    pack_path.write_bytes(bytes(data))
    b, _ = await opened_pack(tmp_path)
    try:
        await reads_back(b, batches)  # the objects' bytes are intact, and verified on read
        report = await b.check_storage()
        assert any("damaged record" in line and str(victim) in line for line in report)
    finally:
        await b.close()


async def test_damaged_data_after_indexing_names_the_object(tmp_path: Path) -> None:
    _, batches = await write(tmp_path, range(8))
    pack_path = only_pack(tmp_path)
    rec = scanned(pack_path).records[sorted(scanned(pack_path).records)[3]]
    data = bytearray(pack_path.read_bytes())
    data[rec.comp_start + rec.comp_len // 2] ^= 0xFF
    pack_path.write_bytes(bytes(data))
    b, _ = await opened_pack(tmp_path)
    try:
        victim = batches[3][0][0]
        with pytest.raises(CorruptObjectError, match=victim.hex()):
            await b.get_objects([victim])
        await reads_back(b, batches[:3])  # the records before it in the chain
    finally:
        await b.close()


async def test_gc_removes_an_index_with_its_pack_and_orphaned_ones(tmp_path: Path) -> None:
    _, batches = await write(tmp_path, range(6))
    old = only_pack(tmp_path)
    orphan = tmp_path / "packs" / "0000000000000000-000000000000.pack.idx"
    orphan.write_bytes(b"left by a process that died between two unlinks")
    b = LocalBackend(tmp_path, pack_index=True)
    await b.open()
    try:
        doomed = [oid for oid, _ in batches[0]]
        assert await b.delete_objects(doomed) == 5
        assert not old.exists()
        assert not packidx.path_of(old).exists()
        assert not orphan.exists()
        new = only_pack(tmp_path)
        assert packidx.path_of(new).exists()  # the survivors' new pack is indexed when sealed
        await reads_back(b, batches[1:])
    finally:
        await b.close()
    b, pack = await opened_pack(tmp_path)
    try:
        assert pack.indexed == 25
        same_as_scan(pack, new)
    finally:
        await b.close()


async def test_a_failed_index_write_only_costs_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(packidx, "atomic_write", full_disk)
    _, batches = await write(tmp_path, range(6))
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == [only_pack(tmp_path).name]
    monkeypatch.undo()
    b, pack = await opened_pack(tmp_path)
    try:
        assert pack.indexed == 0  # no index: scanned (and too small for a reader to index it)
        same_as_scan(pack, only_pack(tmp_path))
        await reads_back(b, batches)
    finally:
        await b.close()


async def test_a_reader_indexes_a_pack_it_had_to_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packidx, "MIN_NEW", 10)
    _, batches = await write(tmp_path, range(10))
    pack_path = only_pack(tmp_path)
    packidx.path_of(pack_path).unlink()
    b = LocalBackend(tmp_path, pack_index=True)
    await b.open()
    (pack,) = b._packs.values()
    await b.close()
    assert pack.indexed == 50
    heads = HeadReads(monkeypatch)
    b, pack = await opened_pack(tmp_path)
    try:
        assert heads.count == 0
        await reads_back(b, batches)
    finally:
        await b.close()


async def test_by_default_a_store_writes_no_indexes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packidx, "MIN_NEW", 10)
    b = LocalBackend(tmp_path)
    await b.open()
    batches = [batch(s) for s in range(40)]
    for one in batches:
        await b.put_objects(one, stream="s")
    await b.close()
    assert list((tmp_path / "packs").glob("*.idx")) == []
    b = LocalBackend(tmp_path)  # a reader that scanned 200 objects writes none either
    await b.open()
    try:
        await reads_back(b, batches)
    finally:
        await b.close()
    assert list((tmp_path / "packs").glob("*.idx")) == []
