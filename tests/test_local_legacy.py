"""Format-1 pack files and loose objects, as ``castate upgrade`` reads them: torn tails, damaged
records, hostile sizes, links and special files (the product no longer writes them)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from castate.backends.local import packs
from castate.backends.local.legacy import FormatOneObjects
from castate.codec.objects import KIND_STR, encode_frame, object_id
from castate.errors import CorruptFileError


def item(text: str) -> tuple[bytes, bytes]:
    content = text.encode()
    return object_id(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)


def batch(step: int, n: int = 5) -> list[tuple[bytes, bytes]]:
    return [item(f"step {step} object {i} " + "shared text " * 30) for i in range(n)]


def write_pack(path: Path, batches: list[list[tuple[bytes, bytes]]]) -> Path:
    """A format-1 pack as its writer appended it: one record per batch, all in one chain."""
    cobj = zstandard.ZstdCompressor(level=3, write_checksum=False).compressobj()
    data = bytearray(packs.PACK_HEADER)
    prev = 0
    for one in batches:
        raw = b"".join(frame for _, frame in one)
        comp = cobj.compress(raw) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        offset = len(data)
        data += packs.encode_record(one, comp, len(raw), prev, 1)
        prev = offset
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def fill(root: Path, steps: int, first: int = 0) -> list[list[tuple[bytes, bytes]]]:
    batches = [batch(s) for s in range(first, first + steps)]
    write_pack(root / "packs" / "0000000000000001-000000000000.pack", batches)
    return batches


def read_all(root: Path, ids: list[bytes]) -> dict[bytes, bytes]:
    """What the upgrade would read: frames of the ids the scan found."""
    old = FormatOneObjects(root)
    old.scan()
    try:
        found = set(old.ids())
        return old.frames([oid for oid in ids if oid in found])
    finally:
        old.close()


def only_pack(path: Path) -> Path:
    (pack,) = (path / "packs").glob("*.pack")
    return pack


def zeros_zstd(mib: int, *, end_frame: bool) -> bytes:
    """A zstd stream of ``mib`` MiB of zeros: a few KiB that expand 30,000 times."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    body = b"".join(cobj.compress(bytes(1 << 20)) for _ in range(mib))
    return body + (cobj.flush() if end_frame else cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))


def test_a_torn_last_record_is_ignored(tmp_path: Path) -> None:
    batches = fill(tmp_path, 10)
    pack = only_pack(tmp_path)
    size = pack.stat().st_size
    for cut in (1, 7, 60):
        os.truncate(pack, size - cut)
        got = read_all(tmp_path, [oid for one in batches for oid, _ in one])
        assert set(got) == {oid for one in batches[:-1] for oid, _ in one}  # the torn save is gone, nothing else
        assert all(got[oid] == f for one in batches[:-1] for oid, f in one)


def test_a_damaged_record_in_the_middle_is_skipped_and_its_chain_read_as_damaged(tmp_path: Path) -> None:
    batches = fill(tmp_path, 6)
    pack = only_pack(tmp_path)
    p = packs.Pack(pack)
    packs.scan_pack(p)
    victim = sorted(p.records)[2]
    p.close()
    data = bytearray(pack.read_bytes())
    data[victim + 12] ^= 0xFF  # inside the record head: its table is unreadable
    pack.write_bytes(bytes(data))
    p2 = packs.Pack(pack)
    packs.scan_pack(p2)
    p2.close()
    assert p2.damaged
    assert p2.damaged[0][0] == victim
    got = read_all(tmp_path, [oid for one in batches for oid, _ in one])
    assert all(got[oid] == f for oid, f in batches[1])  # before the damage: intact
    assert not set(got) & {oid for oid, _ in batches[2]}  # the damaged record's objects are not found
    after = got[batches[3][0][0]]  # same chain, after the damage: kept aside by the upgrade, named
    assert after.startswith(b"unreadable format-1 object")
    assert b"damaged" in after


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


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_loose_object_that_is_not_a_regular_file_is_not_followed(tmp_path: Path, kind: str) -> None:
    """A loose object replaced by a symlink to /dev/zero used to raise MemoryError; a FIFO hung."""
    oid, _ = item("loose")
    h = oid.hex()
    path = tmp_path / "objects" / h[:2] / h[2:]
    path.parent.mkdir(parents=True)
    if kind == "symlink":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    got = read_all(tmp_path, [oid])
    assert got[oid].startswith(b"unreadable format-1 object")
    assert b"not a regular file" in got[oid]


def test_a_pack_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    fill(tmp_path / "s", 2)
    pack = only_pack(tmp_path / "s")
    target = tmp_path / "elsewhere.pack"
    pack.rename(target)
    pack.symlink_to(target)
    old = FormatOneObjects(tmp_path / "s")
    with pytest.raises(CorruptFileError, match="not a regular file"):
        old.scan()
    old.close()
    assert target.read_bytes()  # left as it was
