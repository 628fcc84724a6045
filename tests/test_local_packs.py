"""Pack files of the local backend: chains, torn tails, damaged records, rewriting."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from castate.backends import LocalBackend
from castate.backends.local import packs
from castate.codec.objects import KIND_STR, encode_frame, object_id
from castate.errors import CorruptFileError, CorruptObjectError


def item(text: str) -> tuple[bytes, bytes]:
    content = text.encode()
    return object_id(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)


def batch(step: int, n: int = 5) -> list[tuple[bytes, bytes]]:
    return [item(f"step {step} object {i} " + "shared text " * 30) for i in range(n)]


async def fill(path: Path, steps: int, stream: str = "s", first: int = 0) -> list[list[tuple[bytes, bytes]]]:
    b = LocalBackend(path)
    await b.open()
    batches = [batch(s) for s in range(first, first + steps)]
    for one in batches:
        await b.put_objects(one, stream=stream)
    await b.close()
    return batches


async def read_all(path: Path, ids: list[bytes]) -> dict[bytes, bytes]:
    b = LocalBackend(path)
    await b.open()
    try:
        return {k: bytes(v) for k, v in (await b.get_objects(ids)).items()}
    finally:
        await b.close()


def only_pack(path: Path) -> Path:
    (pack,) = (path / "packs").glob("*.pack")
    return pack


async def test_one_pack_per_writer_and_records_chain(tmp_path: Path) -> None:
    batches = await fill(tmp_path, 30)
    pack = only_pack(tmp_path)
    p = packs.Pack(pack)
    packs.scan_pack(p)
    assert len(p.records) == 30
    assert len(p.chains) == 1  # one stream: one chain
    raw = sum(len(f) for one in batches for _, f in one)
    assert pack.stat().st_size < raw / 4  # later saves compress against earlier ones
    got = await read_all(tmp_path, [oid for one in batches for oid, _ in one])
    assert got == {oid: f for one in batches for oid, f in one}


async def test_chains_are_cut_to_bound_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packs, "CHAIN_MAX_RAW", 4096)
    batches = await fill(tmp_path, 20)
    p = packs.Pack(only_pack(tmp_path))
    packs.scan_pack(p)
    assert len(p.chains) > 3
    assert await read_all(tmp_path, [batches[-1][0][0]]) == {batches[-1][0][0]: batches[-1][0][1]}


async def test_interleaved_streams_get_their_own_chains(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path)
    await b.open()
    ids = []
    for s in range(10):
        for stream in ("a", "b", "c"):
            one = batch(s * 10 + ord(stream))
            ids += [oid for oid, _ in one]
            await b.put_objects(one, stream=stream)
    await b.close()
    p = packs.Pack(only_pack(tmp_path))
    packs.scan_pack(p)
    assert len(p.chains) == 3
    assert len(await read_all(tmp_path, ids)) == len(ids)


async def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    batches = await fill(tmp_path, 10)
    pack = only_pack(tmp_path)
    size = pack.stat().st_size
    for cut in (1, 7, 60):
        os.truncate(pack, size - cut)
        got = await read_all(tmp_path, [oid for one in batches for oid, _ in one])
        assert set(got) == {oid for one in batches[:-1] for oid, _ in one}  # the torn save is gone, nothing else
        assert all(got[oid] == f for one in batches[:-1] for oid, f in one)


async def test_writer_never_appends_after_a_torn_record(tmp_path: Path) -> None:
    await fill(tmp_path, 3)
    pack = only_pack(tmp_path)
    os.truncate(pack, pack.stat().st_size - 5)
    more = await fill(tmp_path, 2, first=100)  # a new writer: a new pack
    assert len(list((tmp_path / "packs").glob("*.pack"))) == 2
    got = await read_all(tmp_path, [oid for one in more for oid, _ in one])
    assert len(got) == 10


async def test_a_damaged_record_in_the_middle_is_skipped_and_named(tmp_path: Path) -> None:
    batches = await fill(tmp_path, 6, stream="")
    pack = only_pack(tmp_path)
    p = packs.Pack(pack)
    packs.scan_pack(p)
    victim = sorted(p.records)[2]
    data = bytearray(pack.read_bytes())
    data[victim + 12] ^= 0xFF  # inside the record head: its table is unreadable
    pack.write_bytes(bytes(data))
    p2 = packs.Pack(pack)
    packs.scan_pack(p2)
    assert p2.damaged
    assert p2.damaged[0][0] == victim
    b = LocalBackend(tmp_path)
    await b.open()
    try:
        assert set(await b.get_objects([oid for oid, _ in batches[1]])) == {oid for oid, _ in batches[1]}
        assert await b.get_objects([oid for oid, _ in batches[2]]) == {}
        with pytest.raises(CorruptObjectError, match="damaged"):
            await b.get_objects([batches[3][0][0]])  # same chain, after the damage
    finally:
        await b.close()


async def test_readers_see_other_writers(tmp_path: Path) -> None:
    w1, w2 = LocalBackend(tmp_path), LocalBackend(tmp_path)
    await w1.open()
    await w2.open()
    try:
        a, c = batch(1), batch(2)
        await w1.put_objects(a)
        await w2.put_objects(c)
        assert len(list((tmp_path / "packs").glob("*.pack"))) == 2
        assert len(await w1.get_objects([oid for oid, _ in c])) == 5
        assert len(await w2.get_objects([oid for oid, _ in a])) == 5
    finally:
        await w1.close()
        await w2.close()


async def test_delete_rewrites_packs_and_keeps_survivors(tmp_path: Path) -> None:
    batches = await fill(tmp_path, 8)
    old = only_pack(tmp_path)
    doomed = [oid for one in batches[::2] for oid, _ in one]
    keep = {oid: f for one in batches[1::2] for oid, f in one}
    b = LocalBackend(tmp_path)
    await b.open()
    try:
        assert await b.delete_objects(doomed) == len(doomed)
        assert not old.exists()
        assert await b.get_objects(doomed) == {}
        got = await b.get_objects(list(keep))
        assert {k: bytes(v) for k, v in got.items()} == keep
    finally:
        await b.close()
    assert await read_all(tmp_path, list(keep)) == keep


async def test_delete_leaves_packs_of_live_writers_alone(tmp_path: Path) -> None:
    live = LocalBackend(tmp_path)
    await live.open()
    other = LocalBackend(tmp_path)
    await other.open()
    try:
        one = batch(1)
        await live.put_objects(one)
        assert await other.delete_objects([one[0][0]]) == 0
        assert len(await other.get_objects([one[0][0]])) == 1
    finally:
        await live.close()
        await other.close()


def zeros_zstd(mib: int, *, end_frame: bool) -> bytes:
    """A zstd stream of ``mib`` MiB of zeros: a few KiB that expand 30,000 times."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    body = b"".join(cobj.compress(bytes(1 << 20)) for _ in range(mib))
    return body + (cobj.flush() if end_frame else cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))


def test_a_record_that_decompresses_far_past_its_size_is_stopped_early(tmp_path: Path) -> None:
    """A record of 9 KiB that claims 100 bytes and expands to 200 MiB (damage, or a crafted
    store): the reader used to decompress all of it before checking the size."""
    oid, frame = item("x")
    path = tmp_path / "bomb.pack"
    path.write_bytes(
        packs.PACK_HEADER + packs.encode_record([(oid, frame)], zeros_zstd(200, end_frame=False), 100, 0, 1)
    )
    pack = packs.Pack(path)
    packs.scan_pack(pack)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match="wrong size"):
            packs.ChainCache().record_bytes(pack, pack.records[len(packs.PACK_HEADER)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pack.close()
    assert peak < packs.OVERSHOOT + (8 << 20)


def test_output_bound_reads_block_headers() -> None:
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    first = cobj.compress(b"a" * 300_000) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    second = cobj.compress(os.urandom(1000)) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    bound_first = packs.output_bound(first, True)
    bound_second = packs.output_bound(second, False)
    assert bound_first is not None
    assert bound_second is not None
    assert 300_000 <= bound_first <= 300_000 + (3 << 17)
    assert 1000 <= bound_second <= 1 << 17
    assert packs.output_bound(first, False) is None or packs.output_bound(first, False) != bound_first
    assert packs.output_bound(b"\x00\x01", False) is None  # not whole blocks


async def test_a_batch_in_any_order_decompresses_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = LocalBackend(tmp_path)
    await w.open()
    pairs = [(batch(s), batch(100 + s)) for s in range(15)]
    for a, b in pairs:  # two sessions saving in turn: two chains, their records interleaved
        await w.put_objects(a, stream="a")
        await w.put_objects(b, stream="b")
    await w.close()
    wanted = {oid: frame for a, b in pairs for oid, frame in a + b}
    # Newest first, alternating between the chains: a walk in this order would decompress
    # each chain again at every switch once the cache cannot hold both.
    order = [oid for a, b in reversed(pairs) for oid in (a[0][0], b[0][0], *(o for o, _ in a[1:] + b[1:]))]
    calls = 0
    real = packs.bounded_decompress

    def counting(*args: object, **kwargs: object) -> bytes | None:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(packs, "bounded_decompress", counting)
    b = LocalBackend(tmp_path, cache_bytes=4 << 10)  # smaller than one chain
    await b.open()
    try:
        got = await b.get_objects(order)
    finally:
        await b.close()
    assert {oid: bytes(frame) for oid, frame in got.items()} == wanted
    assert calls == 30  # one per record


async def test_a_batch_larger_than_the_cache_pins_at_most_a_quarter_of_it(tmp_path: Path) -> None:
    batches = await fill(tmp_path, 40)
    wanted = {oid: frame for one in batches for oid, frame in one}
    cache = 16 << 10
    b = LocalBackend(tmp_path, cache_bytes=cache)
    await b.open()
    try:
        got = await b.get_objects(list(wanted))
    finally:
        await b.close()
    assert {oid: bytes(frame) for oid, frame in got.items()} == wanted
    pinned = {id(f.obj): len(f.obj) for f in got.values() if isinstance(f, memoryview)}
    largest = max(len(f) for f in wanted.values()) * 5  # one record of five frames
    assert 0 < sum(pinned.values()) <= cache // 4 + largest
    assert any(isinstance(f, bytes) for f in got.values())  # the rest were copied out


def test_a_record_declaring_more_than_any_writer_makes_is_never_decompressed(tmp_path: Path) -> None:
    """A 130 KB crafted pack whose records declare gigabytes made `castate show` use 4.2 GB."""
    oid, frame = item("x")
    path = tmp_path / "huge.pack"
    body = zeros_zstd(1, end_frame=False)
    path.write_bytes(packs.PACK_HEADER + packs.encode_record([(oid, frame)], body, 4 << 30 - 1, 0, 1))
    pack = packs.Pack(path)
    try:
        assert packs.scan_pack(pack) == []
        assert pack.damaged  # refused from its head, named as damage
        assert oid not in pack.entries
    finally:
        pack.close()


def test_a_chain_declaring_more_than_any_writer_makes_is_cut(tmp_path: Path) -> None:
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    path = tmp_path / "long.pack"
    data = bytearray(packs.PACK_HEADER)
    prev = 0
    ids = []
    declared = packs.READ_RECORD_MAX  # each record alone is acceptable; together they are not
    for i in range(3):
        oid, frame = item(f"record {i}")
        comp = cobj.compress(frame) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        offset = len(data)
        data += packs.encode_record([(oid, frame)], comp, declared, prev, 1)
        prev = offset
        ids.append(oid)
    path.write_bytes(bytes(data))
    pack = packs.Pack(path)
    try:
        packs.scan_pack(pack)
        chains = [r.chain for r in sorted(pack.records.values(), key=lambda r: r.offset)]
        assert chains[0] >= 0
        assert chains[-1] == -1  # past READ_CHAIN_MAX: unreadable, never decompressed
    finally:
        pack.close()


async def test_a_save_larger_than_a_record_is_split(tmp_path: Path) -> None:
    # 5 frames of 3.5 MiB: a record of four, then one of a single frame, the second small enough
    # to continue the first record's chain
    big = [item(f"object {i} " + os.urandom(7 << 18).hex()) for i in range(5)]
    b = LocalBackend(tmp_path / "s")
    await b.open()
    try:
        await b.put_objects(big, stream="s")
        pack = b._pack
        assert pack is not None
        assert len(pack.records) >= 2
        assert all(r.raw_len <= packs.RECORD_MAX_RAW for r in pack.records.values())
    finally:
        await b.close()
    assert await read_all(tmp_path / "s", [oid for oid, _ in big]) == dict(big)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
async def test_a_loose_object_that_is_not_a_regular_file_is_corrupt_not_followed(tmp_path: Path, kind: str) -> None:
    """A loose object replaced by a symlink to /dev/zero used to raise MemoryError; a FIFO hung."""
    b = LocalBackend(tmp_path / "s", loose=True)
    await b.open()
    oid, frame = item("loose")
    try:
        await b.put_objects([(oid, frame)])
        path = b._loose_path(oid)
        path.unlink()
        if kind == "symlink":
            path.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
        with pytest.raises(CorruptObjectError, match="not a regular file"):
            await b.get_objects([oid])
    finally:
        await b.close()


async def test_a_pack_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    await fill(tmp_path / "s", 2)
    pack = only_pack(tmp_path / "s")
    target = tmp_path / "elsewhere.pack"
    pack.rename(target)
    pack.symlink_to(target)
    b = LocalBackend(tmp_path / "s")
    with pytest.raises(CorruptFileError, match="not a regular file"):
        await b.open()  # the open scans the packs
    await b.close()
    assert target.read_bytes()  # left as it was


async def test_a_live_writer_seals_its_pack_after_a_gc_so_the_next_gc_frees_it(tmp_path: Path) -> None:
    """gc leaves a pack its writer still appends to alone; the writer moves to a new pack once
    it sees that a gc ran, so a long-running worker's store shrinks while it keeps saving."""
    writer = LocalBackend(tmp_path / "s")
    gc = LocalBackend(tmp_path / "s")
    await writer.open()
    await gc.open()
    try:
        garbage = [item(f"garbage {i} " + os.urandom(20_000).hex()) for i in range(20)]
        await writer.put_objects(garbage, stream="s")
        first = only_pack(tmp_path / "s")
        async with gc.gc_exclusive():
            await gc.delete_objects([oid for oid, _ in garbage])
        assert await gc.has_objects([garbage[0][0]]) == {garbage[0][0]}  # the live writer's pack: left alone
        keep = item("kept")
        await writer.put_objects([keep], stream="s")  # sees the gc, seals its pack, starts another
        assert first.exists()
        async with gc.gc_exclusive():
            await gc.delete_objects([oid for oid, _ in garbage])
        assert not first.exists()
        assert await gc.has_objects([oid for oid, _ in garbage]) == set()
        assert sum(p.stat().st_size for p in (tmp_path / "s" / "packs").glob("*.pack")) < 20_000
        assert await read_all(tmp_path / "s", [keep[0]]) == dict([keep])
    finally:
        await writer.close()
        await gc.close()
