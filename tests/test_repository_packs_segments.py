"""Index segments: their bytes, lookups, and how the pack store writes, merges and trusts them."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import blake3
import pytest

from castate.backends import RefUpdate
from castate.backends.base import ANY, Backend
from castate.backends.blob import BlobInfo
from castate.backends.memory import MemoryBackend
from castate.backends.sqlite import SQLiteBackend
from castate.codec.objects import decode_frame
from castate.errors import (
    BackendUnavailableError,
    CastateError,
    CorruptFileError,
    CorruptObjectError,
    UnsupportedFormatError,
)
from castate.repository.packs import EPOCH_REF, PackStore
from castate.repository.packs.catalog import Catalog
from castate.repository.packs.format import PACK_PREFIX, ZERO_ID, PackInfo
from castate.repository.packs.segments import (
    ENTRY_SIZE_V2,
    INDEX_PREFIX,
    PACK_SIZE,
    PACK_SIZE_V2,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    fanout_bits,
    key_of,
    make_segment,
    parse_segment,
)
from castate.repository.packs.store import GC_DIRTY, new_epoch
from tests.backend_conformance import BackendConformance, cid
from tests.test_repository_packs import raw_obj

FIXTURE = Path(__file__).parent / "fixtures" / "format2-v2-segments"


def pack(n: int, *, seq: int = 0, chain: bytes = b"c" * 16, raw_len: int = 1000) -> PackInfo:
    return PackInfo(f"{n + 1:02x}" * 32, chain, seq, ZERO_ID, raw_len, 0, 7, 200, 50, 250)


def oid(n: int) -> bytes:
    return n.to_bytes(4, "big") * 8


class TestPackStoreWithSegmentsOnMemory(BackendConformance):
    """The object contract, with a segment written after every second pack."""

    async def make_backend(self) -> Backend:
        return PackStore(MemoryBackend(), index_after=2)


VERSIONS = pytest.mark.parametrize("version", [2, 3])  # 2: what castate wrote before, still read


@VERSIONS
def test_every_entry_is_found_and_absent_ids_are_not(version: int) -> None:
    entries = [(oid(i * 7919), i % 100, 3 + i) for i in range(5000)]
    name, data = make_segment(
        [(pack(0, raw_len=6000), entries[:2500]), (pack(1, raw_len=6000), entries[2500:])], version=version
    )
    seg = parse_segment(name, data)
    assert (seg.n_entries, seg.n_packs, seg.bits) == (5000, 2, fanout_bits(5000))
    for n, (i, off, length) in enumerate(entries):
        assert list(seg.find(i)) == [(key_of(pack(0 if n < 2500 else 1).name), off, length)]
    assert list(seg.find(oid(1))) == []
    assert sorted(o for o, *_ in seg.entries()) == sorted(o for o, _, _ in entries)


@VERSIONS
def test_every_copy_of_an_object_is_found(version: int) -> None:
    name, data = make_segment(
        [(pack(0), [(oid(5), 0, 10)]), (pack(1), [(oid(5), 20, 10), (oid(6), 0, 4)])], version=version
    )
    k0, k1 = key_of(pack(0).name), key_of(pack(1).name)
    assert sorted(parse_segment(name, data).find(oid(5))) == [(k0, 0, 10), (k1, 20, 10)]


@VERSIONS
def test_an_id_that_appears_across_entry_boundaries_is_not_taken_for_an_entry(version: int) -> None:
    a = bytes([7]) * 32
    name, data = make_segment([(pack(0), [(a, 0, 16)])], version=version)
    seg = parse_segment(name, data)
    ghost = data[seg.entries_at + seg.entry_size - 32 : seg.entries_at + seg.entry_size]  # a's entry's last 32 bytes
    assert ghost != a
    assert list(parse_segment(name, data).find(ghost)) == []
    name, data = make_segment([(pack(0), [(a, 0, 16), (ghost, 16, 8)])], version=version)
    assert list(parse_segment(name, data).find(ghost)) == [(key_of(pack(0).name), 16, 8)]


def test_fanout_grows_with_the_entries_and_is_bounded() -> None:
    assert fanout_bits(0) == 0
    assert fanout_bits(13) == 2  # a save's segment: a fanout of 5 numbers
    assert fanout_bits(100_000) == 15
    assert fanout_bits(1 << 40) == 20


def _resign(data: bytes) -> tuple[str, bytes]:
    import blake3

    return blake3.blake3(data).hexdigest(), data


@VERSIONS
def test_damaged_or_foreign_segments_are_refused(version: int) -> None:
    name, data = make_segment([(pack(0), [(oid(1), 0, 10)])], version=version)
    with pytest.raises(CorruptFileError, match="do not match its name"):
        parse_segment(name, data[:-1] + b"\x01")
    with pytest.raises(CorruptFileError, match="bad magic"):
        parse_segment(*_resign(b"CASTPAK2" + data[8:]))
    with pytest.raises(UnsupportedFormatError, match="version 4"):
        parse_segment(*_resign(data[:8] + b"\x04" + data[9:]))
    with pytest.raises(CorruptFileError, match="unknown index segment version 1"):
        parse_segment(*_resign(data[:8] + b"\x01" + data[9:]))
    other = bytes([5 - version])  # the other version: the tables no longer fit (or its widths are wrong)
    with pytest.raises(CorruptFileError):
        parse_segment(*_resign(data[:8] + other + data[9:]))
    with pytest.raises(CorruptFileError, match="do not fit"):
        parse_segment(*_resign(data + b"\x00" * 4))
    with pytest.raises(CorruptFileError, match="shorter than its head"):
        parse_segment(*_resign(data[:20]))
    fan_end = len(data) - 4
    with pytest.raises(CorruptFileError, match="fanout"):
        parse_segment(*_resign(data[:fan_end] + struct.pack("<I", 2)))


def test_a_pack_row_that_no_pack_head_could_have_is_not_used() -> None:
    huge = pack(0, raw_len=200 << 20)
    seg = parse_segment(*make_segment([(huge, [(oid(1), 0, 10)])]))
    cat = Catalog()
    cat.add_segment(seg)
    assert cat.place(oid(1)) is None
    assert any("inconsistent head" in line for line in cat.problems())


@VERSIONS
def test_an_entry_that_points_outside_its_pack_is_not_used(version: int) -> None:
    name, data = make_segment([(pack(0, raw_len=100), [(oid(1), 90, 20), (oid(2), 10, 20)])], version=version)
    seg = parse_segment(name, data)
    row, entry = (PACK_SIZE_V2, ENTRY_SIZE_V2) if version == 2 else (PACK_SIZE, 32 + 1 + 2 * 2)
    assert (seg.entries_at, len(data), seg.entry_size, row) == (
        36 + row,
        seg.fanout_at + 4 * 2,
        entry,
        120 - 20 * (version - 2),
    )
    cat = Catalog()
    cat.add_segment(seg)
    assert cat.place(oid(1)) is None
    assert cat.place(oid(2)) == (seg.pack(key_of(pack(0).name)), 10, 20)
    cat.mark_listed(set(), among={pack(0).name})  # gc deleted the pack since the segment was written
    assert cat.place(oid(2)) is None


@contextlib.asynccontextmanager
async def _after_first_listing(
    blobs: MemoryBackend, prefix: str, action: Callable[[], Awaitable[object]]
) -> AsyncIterator[list[int]]:
    """Run ``action`` right after the first listing of ``prefix`` (another process acting
    between two listings); yields a list that holds 1 once it ran."""
    real_list = blobs.list_blobs
    ran: list[int] = []

    async def racing_list(listed: str = "") -> list[BlobInfo]:
        out = await real_list(listed)
        if not ran and listed == prefix:
            ran.append(1)
            await action()
        return out

    blobs.list_blobs = racing_list  # type: ignore[method-assign]
    try:
        yield ran
    finally:
        blobs.list_blobs = real_list  # type: ignore[method-assign]


async def _save(store: PackStore, n: int, stream: str = "s") -> tuple[bytes, bytes]:
    item = raw_obj(f"object number {n} " * 8)
    await store.commit([item], [RefUpdate(f"sessions/s{n}", cid(n), None)], stream=stream)
    return item


async def test_saves_write_segments_that_stay_few_and_cover_every_pack() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=4, chain_max=600)
    await store.open()
    items = [await _save(store, n) for n in range(200)]
    segments = await blobs.list_blobs(INDEX_PREFIX)
    assert 1 <= len(segments) <= 4 + 8  # one per save, merged as they go: about 4 + log2(saves)
    fresh = PackStore(blobs, index_after=4)
    await fresh.open()
    assert not fresh._cat.packs  # every pack came from a segment, none from its head
    got = await fresh.get_objects([i for i, _ in items])
    assert {k: bytes(v) for k, v in got.items()} == dict(items)
    assert (await fresh.stats())["objects"] == 200


async def test_opening_reads_segments_instead_of_pack_heads() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=8)
    await store.open()
    for n in range(64):
        await _save(store, n)
    ranges: list[int] = []
    real = blobs.get_ranges

    async def counting(spans):  # type: ignore[no-untyped-def]
        ranges.append(len(spans))
        return await real(spans)

    blobs.get_ranges = counting  # type: ignore[method-assign]
    fresh = PackStore(blobs)
    await fresh.open()
    assert sum(ranges) == 0


async def test_gc_leaves_one_segment_and_drops_what_it_deleted() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=4)
    await store.open()
    items = [await _save(store, n) for n in range(40)]
    assert await store.delete_objects([items[3][0]]) == 1
    assert len(await blobs.list_blobs(INDEX_PREFIX)) == 1
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([i for i, _ in items]) == {i for i, _ in items} - {items[3][0]}
    await store.maintain()
    assert len(await blobs.list_blobs(INDEX_PREFIX)) == 1


async def test_a_segment_naming_deleted_packs_is_not_trusted_for_them() -> None:
    """gc failed after deleting packs, before writing its segment: the old segment names them."""
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=4)
    await store.open()
    items = [await _save(store, n, stream=f"s{n}") for n in range(8)]  # a chain each
    await store.maintain()
    assert len(await blobs.list_blobs(INDEX_PREFIX)) == 1
    packs = [i.name for i in await blobs.list_blobs(PACK_PREFIX)]
    await blobs.delete_blobs(packs[:3])
    await blobs.commit((), [RefUpdate(EPOCH_REF, new_epoch(GC_DIRTY), ANY)])  # what a failed gc leaves
    fresh = PackStore(blobs)
    await fresh.open()
    assert len(await fresh.has_objects([i for i, _ in items])) == 5
    await fresh.maintain()  # the next gc lists the packs, writes a segment without them: clean again
    assert (await blobs.get_ref(EPOCH_REF) or b"\x02")[0] == 0
    again = PackStore(blobs)
    await again.open()
    assert len(await again.has_objects([i for i, _ in items])) == 5


async def test_packs_a_damaged_segment_listed_are_indexed_from_their_bytes() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=4)
    await store.open()
    items = [await _save(store, n) for n in range(4)]
    (seg,) = await blobs.list_blobs(INDEX_PREFIX)
    data = (await blobs.get_blobs([seg.name]))[seg.name]
    await blobs.delete_blobs([seg.name])
    await blobs.put_blobs([(seg.name, data[:-1] + bytes([data[-1] ^ 1]))])
    fresh = PackStore(blobs)
    await fresh.open()
    got = await fresh.get_objects([i for i, _ in items])
    assert {k: bytes(v) for k, v in got.items()} == dict(items)
    problems = await fresh.check_storage()
    assert any("do not match its name" in line for line in problems)
    assert sum("no index segment lists it" in line for line in problems) == 4
    for n in range(4, 8):  # saves go on, and a merge lists the orphans again
        await _save(fresh, n)
    again = PackStore(blobs)
    await again.open()
    assert not again._cat.orphans
    assert len(await again.has_objects([i for i, _ in items])) == 4


async def test_a_hostile_segment_entry_gives_a_named_error_not_wrong_data() -> None:
    """A well-formed segment whose entries point at each other's bytes in a real pack."""
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    a, b = raw_obj("first object " * 5), raw_obj("second object " * 5)
    await store.put_objects([a, b], stream="s")
    (saved,) = store._cat.segments  # the save's own segment
    (name,) = saved.pack_names()
    p = saved.pack(key_of(name))
    assert p is not None
    places = {oid: (off, length) for oid, _, off, length in saved.entries()}
    name, data = make_segment([(p, [(a[0], *places[b[0]]), (b[0], *places[a[0]])])])
    await blobs.delete_blobs([saved.blob])
    await blobs.put_blobs([(INDEX_PREFIX + name, data)])
    victim = PackStore(blobs)
    await victim.open()
    got = await victim.get_objects([a[0]])
    assert bytes(got[a[0]]) == b[1]  # the store hands over what the entry says ...
    with pytest.raises(CorruptObjectError) as err:  # ... and every reader checks it against its id
        decode_frame(a[0], got[a[0]])
    assert a[0].hex() in str(err.value)


async def test_a_segment_merged_away_during_a_listing_is_listed_again() -> None:
    blobs = MemoryBackend()
    writer = PackStore(blobs, index_after=2)
    await writer.open()
    items = [await _save(writer, n) for n in range(2)]
    real = blobs.get_blobs
    raced = []

    async def racing(names):  # type: ignore[no-untyped-def]
        if not raced and any(n.startswith(INDEX_PREFIX) for n in names):
            raced.append(1)
            for n in range(2, 4):
                items.append(await _save(writer, n))  # merges the listed segment into a new one
        return await real(names)

    blobs.get_blobs = racing  # type: ignore[method-assign]
    reader = PackStore(blobs)
    await reader.open()
    assert raced
    assert len(reader._cat.segments) == 1
    assert not reader._cat.packs
    assert await reader.has_objects([i for i, _ in items]) == {i for i, _ in items}


async def test_a_merge_the_backend_refuses_does_not_fail_the_save_it_follows() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=3)
    await store.open()
    real = blobs.delete_blobs

    async def failing(names):  # type: ignore[no-untyped-def]
        raise BackendUnavailableError("the server went away")

    blobs.delete_blobs = failing  # type: ignore[method-assign]
    items = [await _save(store, n) for n in range(6)]  # merges run, and fail at the delete
    blobs.delete_blobs = real  # type: ignore[method-assign]
    assert len(await blobs.list_blobs(INDEX_PREFIX)) > 3  # merged segments written, merged ones kept
    assert await store.get_refs([f"sessions/s{n}" for n in range(6)]) == {f"sessions/s{n}": cid(n) for n in range(6)}
    fresh = PackStore(blobs)
    await fresh.open()  # merged and unmerged segments both listed: places repeat, nothing is lost
    assert await fresh.has_objects([i for i, _ in items]) == {i for i, _ in items}
    assert (await fresh.stats())["objects"] == 6


async def test_two_writers_merging_the_same_segments_lose_and_duplicate_nothing() -> None:
    blobs = MemoryBackend()
    a, b = PackStore(blobs, index_after=4), PackStore(blobs, index_after=4)
    await a.open()
    items = [await _save(a, n, stream="a") for n in range(3)]
    await b.open()  # b knows a's three segments
    items += [await _save(b, n, stream="b") for n in range(3, 4)]  # b merges all four
    items += [await _save(a, n, stream="a") for n in range(4, 5)]  # a merges its own four, one deleted
    fresh = PackStore(blobs, index_after=4)
    await fresh.open()
    assert await fresh.has_objects([i for i, _ in items]) == {i for i, _ in items}
    stats = await fresh.stats()
    assert stats["objects"] == 5
    assert stats["packs"] == 5
    await fresh.maintain()
    assert len(await blobs.list_blobs(INDEX_PREFIX)) == 1


# Found by a review of the segment change: each failed before its fix.


async def _save_text(store: PackStore, n: int, stream: str = "s", text: str | None = None) -> tuple[bytes, bytes]:
    item = raw_obj(text or f"object number {n} " * 8)
    await store.commit([item], [RefUpdate(f"sessions/s{n}", cid(n), None)], stream=stream)
    return item


async def test_a_merge_that_finishes_after_a_reload_does_not_bring_back_the_pre_gc_catalog() -> None:
    """Process A merges segments; while its merge deletes the merged ones, gc (process G)
    deletes object Y, and a task of A (gc_shared, as imports do) reloads A's catalog at the new
    epoch. The merge then swaps in a catalog built from the old one: pre-gc contents, new epoch.
    A later save of Y skips it and its commit passes the epoch check: Y is lost."""
    blobs = MemoryBackend()
    a = PackStore(blobs, index_after=2)
    g = PackStore(blobs)
    await a.open()
    await g.open()
    real_delete = blobs.delete_blobs
    raced: list[int] = []
    y = raw_obj("object number 1 " * 8)

    async def racing_delete(names):  # type: ignore[no-untyped-def]
        if not raced and any(n.startswith(INDEX_PREFIX) for n in names):
            raced.append(1)
            assert await g.delete_objects([y[0]]) == 1  # gc in another process
            async with a.gc_shared():  # a task of A: reloads since the epoch moved
                pass
        return await real_delete(names)

    blobs.delete_blobs = racing_delete  # type: ignore[method-assign]
    await _save_text(a, 0, stream="x")
    assert await _save_text(a, 1, stream="y") == y  # 2 segments: the merge runs
    assert raced
    await a.commit([y], [RefUpdate("sessions/again", cid(99), None)], stream="y")
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.get_refs(["sessions/again"]) == {"sessions/again": cid(99)}
    got = await fresh.get_objects([y[0]])
    assert y[0] in got, "the ref points at an object no pack holds"


async def test_a_save_committed_during_a_refresh_is_not_dropped_from_merged_segments() -> None:
    """A's refresh lists packs/, then B commits a save (pack + segment), then A lists index/:
    A reads B's segment and marks B's pack gone (not in the pack listing). A's next merge
    leaves B's pack out and deletes B's segment: no segment covers a healthy pack, and fsck
    reports it (and every reader must decompress and hash it)."""
    blobs = MemoryBackend()
    a = PackStore(blobs, index_after=3)
    b = PackStore(blobs)
    await a.open()
    await b.open()
    await _save_text(a, 0, stream="a")
    async with _after_first_listing(blobs, PACK_PREFIX, lambda: _save_text(b, 1, stream="b")):
        # another process saves between the two listings
        assert await a.has_objects([bytes(32)]) == set()  # an unknown id: a refresh
    await _save_text(a, 2, stream="a")  # 3 segments: merge
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.check_storage() == []


async def test_a_segment_with_a_hostile_fanout_does_not_crash_lookups() -> None:
    """A segment whose fanout parses (fanout[0] == 0, fanout[-1] == n_entries) but is not
    monotonic: a lookup searches past the entries into the fanout and unpacks beyond the
    segment's end -> struct.error instead of a castate error or 'not here'."""
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    bits = 7
    n = 0
    while True:  # a real object id whose bucket is not among the fanout words it overlaps
        item = raw_obj(f"victim {n}")
        k = int.from_bytes(item[0][:4], "big") >> (32 - bits)
        if k > 0 and k + 1 < 120:
            break
        n += 1
    fan = [0] * ((1 << bits) + 1)
    fan[k + 1] = 1000  # lo = 0 < hi: the search runs into the fanout
    fan[120:128] = struct.unpack("<8I", item[0])  # the id, 48-aligned from the entries
    fan[128] = 0  # == n_entries
    data = struct.pack("<8sBB2xII16x", SEGMENT_MAGIC, 2, bits, 0, 0) + struct.pack(f"<{len(fan)}I", *fan)
    assert ENTRY_SIZE_V2 == 48
    await blobs.put_blobs([(INDEX_PREFIX + blake3.blake3(data).hexdigest(), data)])
    await _save_text(store, 0)  # a real segment too
    victim = PackStore(blobs)
    await victim.open()
    try:
        assert await victim.has_objects([item[0]]) == set()
        await victim.commit([item], [RefUpdate("sessions/v", cid(7), None)])
    except CastateError:
        pass  # a named castate error would be acceptable


async def test_a_gc_that_fails_and_cannot_mark_the_epoch_dirty_leaves_no_stale_catalog() -> None:
    """gc deletes a garbage-only chain, then the backend goes away for a moment: the delete
    raises after taking effect, and the finally's move of the epoch to 'dirty' fails too. The
    store keeps its pre-gc catalog and the 'gc running' epoch it set itself, which still
    matches the stored one: the next save of the deleted object skips it and commits."""
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    d = await _save_text(store, 0, stream="d")  # alone in its chain
    await _save_text(store, 1, stream="x")
    real_delete, real_commit = blobs.delete_blobs, blobs.commit
    outage: list[int] = []

    async def flaky_delete(names):  # type: ignore[no-untyped-def]
        n = await real_delete(names)
        if any(x.startswith(PACK_PREFIX) for x in names) and not outage:
            outage.append(1)
            raise BackendUnavailableError("connection lost")
        return n

    async def flaky_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        if outage == [1]:
            outage.append(2)
            raise BackendUnavailableError("still down")
        return await real_commit(*args, **kwargs)

    blobs.delete_blobs = flaky_delete  # type: ignore[method-assign]
    blobs.commit = flaky_commit  # type: ignore[method-assign]
    with contextlib.suppress(BackendUnavailableError):
        await store.delete_objects([d[0]])
    assert outage == [1, 2]
    # the backend is back; the process saves d again (a new session holding the same content)
    await store.commit([d], [RefUpdate("sessions/again", cid(5), None)], stream="d2")
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.get_refs(["sessions/again"]) == {"sessions/again": cid(5)}
    assert d[0] in await fresh.get_objects([d[0]]), "the ref points at an object no pack holds"


async def test_iter_objects_reads_other_writers_segments_instead_of_hashing_their_packs() -> None:
    """iter_objects (gc's and fsck --full's listing) lists packs/ and reads the heads of packs
    the catalog lacks, without first reading the segments listed since: every pack another
    process saved since the open is decompressed and hashed, and reported as unindexed."""
    blobs = MemoryBackend()
    a, b = PackStore(blobs), PackStore(blobs)
    await a.open()
    await b.open()
    await _save_text(a, 0, stream="a")
    await _save_text(b, 1, stream="b")  # another process, with its own segment
    listed = [info async for info in a.iter_objects()]
    assert len(listed) == 2
    assert a._cat.orphans == []
    assert await a.check_storage() == []


async def test_a_dirty_open_lists_packs_before_segments() -> None:
    """docs/format.md §6.2: a reader lists packs/ before index/. _reload under a 'dirty' epoch
    lists index/ first, then packs/: a save committed in between has its pack listed and its
    segment unread, so the pack is decompressed, hashed and reported as unindexed."""
    from castate.backends.base import ANY
    from castate.repository.packs import EPOCH_REF
    from castate.repository.packs.store import GC_DIRTY, new_epoch

    blobs = MemoryBackend()
    a, b = PackStore(blobs), PackStore(blobs)
    await b.open()
    await _save_text(b, 0, stream="b")
    await blobs.commit((), [RefUpdate(EPOCH_REF, new_epoch(GC_DIRTY), ANY)])  # a gc failed earlier
    await b._reload()
    async with _after_first_listing(blobs, INDEX_PREFIX, lambda: _save_text(b, 1, stream="b")) as ran:
        await a.open()
    assert ran
    assert a._cat.orphans == []
    assert await a.check_storage() == []


async def test_segments_of_saves_of_different_sizes_are_merged_too() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, index_after=8)
    await store.open()
    items = []
    for n in range(300):
        batch = [raw_obj(f"save {n} object {k}") for k in range(1 + (n * 7) % 13)]  # 1 to 13 objects
        await store.commit(batch, [RefUpdate(f"sessions/s{n}", cid(n), None)], stream="s")
        items += batch
    assert len(await blobs.list_blobs(INDEX_PREFIX)) <= 8 + 12
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([i for i, _ in items]) == {i for i, _ in items}


async def test_orphans_of_several_chains_are_all_indexed_from_their_bytes() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    items = [await _save(store, n, stream=f"s{n % 3}") for n in range(9)]  # three chains
    await blobs.delete_blobs([i.name for i in await blobs.list_blobs(INDEX_PREFIX)])
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([i for i, _ in items]) == {i for i, _ in items}
    assert len(fresh._cat.orphans) == 9


def _resegment(data: bytes) -> tuple[str, bytes]:
    return _resign(bytes(data))


@VERSIONS
def test_fsck_names_what_lookups_would_not_notice_in_a_segment(version: int) -> None:
    entries = [(oid(i * 7919), 10 * i, 10) for i in range(40)]
    name, data = make_segment([(pack(0, raw_len=400), entries)], version=version)
    assert parse_segment(name, data).check() == []
    seg = parse_segment(name, data)
    at, size = seg.entries_at, seg.entry_size
    swapped = bytearray(data)
    swapped[at : at + 2 * size] = data[at + size : at + 2 * size] + data[at : at + size]
    assert any("out of id order" in p for p in parse_segment(*_resegment(swapped)).check())
    fanned = bytearray(data)
    struct.pack_into("<I", fanned, seg.fanout_at + 4 * 3, 39)
    assert any("fanout does not count" in p for p in parse_segment(*_resegment(fanned)).check())
    keyless = bytearray(data)
    keyless[at + 32 : at + 32 + (8 if version == 2 else 1)] = b"\xee" * (8 if version == 2 else 1)  # key, or row
    assert any("name no pack" in p for p in parse_segment(*_resegment(keyless)).check())
    outside = parse_segment(*make_segment([(pack(0, raw_len=400), [*entries, (oid(1), 395, 10)])], version=version))
    assert any("outside their pack" in p for p in outside.check())
    twin = PackInfo("01" * 8 + "ff" * 24, b"d" * 16, 0, ZERO_ID, 100, 0, 7, 200, 50, 250)
    shared = parse_segment(*make_segment([(pack(0), [(oid(1), 0, 10)]), (twin, [(oid(2), 0, 10)])], version=version))
    assert any("share the first 8 bytes" in p for p in shared.check())


async def test_a_segment_that_lies_is_reported_by_fsck() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    for n in range(3):
        await _save(store, n)
    await store.maintain()
    (info,) = await blobs.list_blobs(INDEX_PREFIX)
    data = (await blobs.get_blobs([info.name]))[info.name]
    seg = parse_segment(info.name[len(INDEX_PREFIX) :], data)
    at, size = seg.entries_at, seg.entry_size
    swapped = bytearray(data)
    swapped[at : at + 2 * size] = data[at + size : at + 2 * size] + data[at : at + size]
    name, forged = _resegment(swapped)
    await blobs.delete_blobs([info.name])
    await blobs.put_blobs([(INDEX_PREFIX + name, forged)])
    fresh = PackStore(blobs)
    await fresh.open()
    assert any("out of id order" in line for line in await fresh.check_storage())


async def test_a_store_of_version_2_segments_reads_and_merges_into_version_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments as castate wrote them before version 3 (48-byte entries, 120-byte rows): a
    store of them opens, finds every object, and its next merges and gc rewrite them as
    version 3, losing nothing."""
    blobs = MemoryBackend()
    old = PackStore(blobs, index_after=4)
    monkeypatch.setattr(
        "castate.repository.packs.store.make_segment",
        lambda *args, **kwargs: make_segment(*args, **kwargs, version=2),
    )
    await old.open()
    items = [await _save(old, n, stream=f"s{n % 3}") for n in range(30)]
    await old.close()
    monkeypatch.undo()
    datas = await blobs.get_blobs([i.name for i in await blobs.list_blobs(INDEX_PREFIX)])
    assert len(datas) > 1
    assert {d[8] for d in datas.values()} == {2}
    assert any(parse_segment(n[len(INDEX_PREFIX) :], d).n_packs > 1 for n, d in datas.items())  # merged ones too

    store = PackStore(blobs, index_after=4)
    await store.open()
    got = await store.get_objects([oid for oid, _ in items])
    assert {oid: bytes(f) for oid, f in got.items()} == dict(items)
    more = [await _save(store, n) for n in range(30, 40)]  # merges take version-2 segments in
    versions = {d[8] for d in (await blobs.get_blobs([i.name for i in await blobs.list_blobs(INDEX_PREFIX)])).values()}
    assert 3 in versions
    fresh = PackStore(blobs)
    await fresh.open()
    got = await fresh.get_objects([oid for oid, _ in [*items, *more]])
    assert {oid: bytes(f) for oid, f in got.items()} == dict([*items, *more])
    assert await fresh.check_storage() == []
    await fresh.maintain()  # gc's one segment for everything
    (info,) = await blobs.list_blobs(INDEX_PREFIX)
    assert (await blobs.get_blobs([info.name]))[info.name][8] == SEGMENT_VERSION == 3
    again = PackStore(blobs)
    await again.open()
    got = await again.get_objects([oid for oid, _ in [*items, *more]])
    assert {oid: bytes(f) for oid, f in got.items()} == dict([*items, *more])


def test_version_3_entries_take_the_bytes_their_segment_needs() -> None:
    """A save's segment (one small pack): 37-byte entries; a row number and places of 3 bytes
    once packs or their raw bytes pass 256 and 65,535."""
    small = parse_segment(*make_segment([(pack(0), [(oid(1), 0, 10)])]))
    assert (small.version, small.row_width, small.place_width, small.entry_size) == (3, 1, 2, 37)
    big = pack(1, raw_len=70_000)
    wide = parse_segment(*make_segment([(big, [(oid(2), 65_000, 5_000)])]))
    assert (wide.place_width, wide.entry_size, wide.first(oid(2))) == (3, 39, (key_of(big.name), 65_000, 5_000))
    many = [PackInfo(f"{n:016x}" + "ab" * 24, b"c" * 16, 0, ZERO_ID, 1000, 0, 0, 200, 50, 250) for n in range(1, 302)]
    seg = parse_segment(*make_segment([(p, [(oid(n), 10, 20)]) for n, p in enumerate(many)]))
    assert (seg.row_width, seg.entry_size) == (2, 38)
    for n, p in enumerate(many):
        assert seg.first(oid(n)) == (key_of(p.name), 10, 20)
        found = seg.pack(key_of(p.name))
        assert found is not None
        assert (found.name, found.size, found.time_ns) == (p.name, 250, 0)


async def test_a_sqlite_store_written_before_segment_version_3_keeps_working(tmp_path: Path) -> None:
    """tests/fixtures/format2-v2-segments: a store made by castate 5e76cb1 (version-2
    segments, merged ones among them; 4 KiB SQLite pages). Every checkpoint restores; saves
    and gc then write version 3, and everything still restores."""
    import importlib.util

    import castate

    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    assert spec is not None
    assert spec.loader is not None
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)  # its state(n): what each checkpoint holds
    db = tmp_path / "store.sqlite"
    shutil.copy(FIXTURE / "store.sqlite", db)
    expected: dict[str, int] = json.loads((FIXTURE / "expected.json").read_text())

    async def segment_versions() -> set[int]:
        blobs = SQLiteBackend(db)
        await blobs.open()
        try:
            listed = await blobs.list_blobs(INDEX_PREFIX)
            return {data[8] for data in (await blobs.get_blobs([i.name for i in listed])).values()}
        finally:
            await blobs.close()

    assert await segment_versions() == {2}
    sm = castate.StateManager(f"sqlite:///{db}")
    try:
        for checkpoint, n in expected.items():
            assert await sm.restore_checkpoint(checkpoint) == fixture.state(n)
        assert (await sm.load_session("other"))["n"] == 40
        store = sm.repository.backend
        assert isinstance(store, PackStore)
        assert await store.check_storage() == []  # the segments were read, not refused and worked around
        assert {s.version for s in store._cat.segments} == {2}
        for n in range(41, 61):  # merges take the version-2 segments in
            await sm.save_session("main", fixture.state(n))
    finally:
        await sm.close()
    assert 3 in await segment_versions()
    sm = castate.StateManager(f"sqlite:///{db}")
    try:
        assert await sm.load_session("main") == fixture.state(60)
        await sm.gc()
        for checkpoint, n in expected.items():
            assert await sm.restore_checkpoint(checkpoint) == fixture.state(n)
    finally:
        await sm.close()
    assert await segment_versions() == {3}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096  # as the file was made
