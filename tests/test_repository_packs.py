"""The pack store (format 2): the object contract over a blob backend, chains, gc's epoch, damage."""

from __future__ import annotations

import asyncio
import os
import struct
import tracemalloc
from pathlib import Path

import pytest

import castate
from castate.backends import RefUpdate
from castate.backends.base import Backend
from castate.backends.memory import MemoryBackend
from castate.codec.objects import KIND_STR, encode_frame, object_id
from castate.errors import CorruptFileError, CorruptObjectError, UnsupportedFormatError
from castate.repository.gc import collect_garbage
from castate.repository.packs import EPOCH_REF, PackStore
from castate.repository.packs.format import HEAD_SIZE, PACK_PREFIX, encode_pack, make_pack, pack_name, parse_pack_head
from castate.repository.packs.segments import INDEX_PREFIX
from tests.backend_conformance import BackendConformance, cid


def raw_obj(text: str) -> tuple[bytes, bytes]:
    content = text.encode()
    return object_id(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)


class TestPackStoreOnMemory(BackendConformance):
    """The object-level contract the repository relies on, kept by the pack store."""

    async def make_backend(self) -> Backend:
        return PackStore(MemoryBackend())


async def packs_of(blobs: MemoryBackend) -> dict[str, bytes]:
    names = [i.name for i in await blobs.list_blobs(PACK_PREFIX)]
    return await blobs.get_blobs(names)


async def test_one_save_is_one_pack_and_one_commit_call() -> None:
    blobs = MemoryBackend()
    calls: list[int] = []
    real = blobs.commit

    async def counting(*args: object, **kwargs: object) -> int:
        calls.append(1)
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    blobs.commit = counting  # type: ignore[method-assign]
    store = PackStore(blobs)
    await store.open()
    items = [raw_obj(f"object {i}" * 20) for i in range(30)]
    assert await store.commit(items, [RefUpdate("sessions/a", cid(1), None)], message="save") == 30
    assert len(calls) == 1
    assert len(await packs_of(blobs)) == 1
    assert await store.get_ref("sessions/a") == cid(1)


async def test_saves_of_a_stream_share_a_chain_that_is_cut_at_its_bound() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, chain_max=4096)
    await store.open()
    for i in range(12):
        await store.put_objects([raw_obj(f"save {i} " + "x" * 900)], stream="s")
    heads = [parse_pack_head(n[len(PACK_PREFIX) :], d, len(d)) for n, d in (await packs_of(blobs)).items()]
    chains: dict[bytes, list[int]] = {}
    for h in heads:
        chains.setdefault(h.chain, []).append(h.raw_len)
        assert h.chain_raw + h.raw_len <= 4096 or h.seq == 0
    assert 1 < len(chains) < 12  # shared, and cut
    assert all(sum(raws) <= 4096 for raws in chains.values())


async def test_a_fresh_store_reads_what_another_wrote() -> None:
    blobs = MemoryBackend()
    a, b = PackStore(blobs), PackStore(blobs)
    await a.open()
    await b.open()
    items = [raw_obj(f"shared {i}") for i in range(5)]
    await a.put_objects(items, stream="s")
    got = await b.get_objects([oid for oid, _ in items])  # not known to b until it looks again
    assert {k: bytes(v) for k, v in got.items()} == dict(items)


async def test_gc_in_one_process_makes_a_stale_writer_write_again() -> None:
    """The lost-object race: b skips an object it saw stored while a's gc deletes it."""
    blobs = MemoryBackend()
    a, b = PackStore(blobs), PackStore(blobs)
    await a.open()
    await b.open()
    x = raw_obj("the object gc removes")
    await b.put_objects([x], stream="s")
    assert await b.has_objects([x[0]]) == {x[0]}
    epoch = await blobs.get_ref(EPOCH_REF)
    async with a.gc_exclusive():
        assert await a.delete_objects([x[0]]) == 1
    assert await blobs.get_ref(EPOCH_REF) != epoch
    # b still believes x is stored; its save must notice gc ran and write x again.
    await b.commit([x], [RefUpdate("sessions/a", cid(1), None)], stream="s")
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([x[0]]) == {x[0]}
    assert bytes((await fresh.get_objects([x[0]]))[x[0]]) == x[1]


async def test_delete_rewrites_the_chain_and_keeps_the_rest() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    items = [raw_obj(f"object {i} " * 30) for i in range(20)]
    for i in range(0, 20, 5):
        await store.put_objects(items[i : i + 5], stream="s")
    before = sum(len(d) for d in (await packs_of(blobs)).values())
    doomed = [oid for oid, _ in items[:15]]
    async with store.gc_exclusive():
        assert await store.delete_objects(doomed) == 15
    assert await store.has_objects([oid for oid, _ in items]) == {oid for oid, _ in items[15:]}
    after = sum(len(d) for d in (await packs_of(blobs)).values())
    assert after < before / 2
    fresh = PackStore(blobs)
    await fresh.open()
    got = await fresh.get_objects([oid for oid, _ in items[15:]])
    assert {k: bytes(v) for k, v in got.items()} == dict(items[15:])


async def test_hidden_epoch_ref_is_not_listed() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    x = raw_obj("x")
    await store.put_objects([x])
    async with store.gc_exclusive():
        await store.delete_objects([x[0]])
    assert EPOCH_REF in await blobs.list_refs()
    assert await store.list_refs() == {}
    assert all(e.name != EPOCH_REF for e in await store.reflog())


async def test_a_damaged_pack_names_the_objects_it_makes_unreadable() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    items = [raw_obj(f"payload {i} " * 50) for i in range(4)]
    await store.put_objects(items[:2], stream="s")
    await store.put_objects(items[2:], stream="s")
    (name, data), *_ = sorted((await packs_of(blobs)).items())
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    blobs._blobs[name] = (bytes(flipped), blobs._blobs[name][1])
    fresh = PackStore(blobs)
    await fresh.open()
    head = parse_pack_head(name[len(PACK_PREFIX) :], data, len(data))
    victim = items[0 if head.seq == 0 else 2][0]
    with pytest.raises(CorruptObjectError) as err:
        await fresh.get_objects([victim])
    assert err.value.object_id in {oid.hex() for oid, _ in items}


async def test_a_pack_with_a_broken_head_is_reported_not_fatal() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    x = raw_obj("kept")
    await store.put_objects([x])
    await blobs.put_blobs([(PACK_PREFIX + "ab" * 32, b"CASTPAK2" + bytes(10))])
    fresh = PackStore(blobs)
    await fresh.open()
    assert bytes((await fresh.get_objects([x[0]]))[x[0]]) == x[1]
    problems = await fresh.check_storage()
    assert any("ab" * 32 in line for line in problems)


async def test_a_pack_that_declares_more_than_it_holds_is_refused() -> None:
    """A crafted head may not make the reader allocate what it declares."""
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    x = raw_obj("victim" * 100)
    await store.put_objects([x])
    (name, data), *_ = (await packs_of(blobs)).items()
    forged = bytearray(data)
    struct.pack_into("<I", forged, 36, 1 << 31)  # raw_len
    blobs._blobs[name] = (bytes(forged), 0)
    await blobs.delete_blobs([i.name for i in await blobs.list_blobs(INDEX_PREFIX)])  # so its head is read
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.get_objects([x[0]]) == {}
    assert any("inconsistent" in line for line in await fresh.check_storage())


async def test_a_newer_pack_version_is_named() -> None:
    blobs = MemoryBackend()
    data = bytearray(b"CASTPAK2" + bytes(HEAD_SIZE))
    data[8] = 4
    await blobs.put_blobs([(PACK_PREFIX + "cd" * 32, bytes(data))])
    store = PackStore(blobs)
    await store.open()
    assert any("version 4" in line for line in await store.check_storage())


async def test_a_format_1_store_is_refused_until_upgraded() -> None:
    class Legacy(MemoryBackend):
        async def legacy_objects(self) -> int:
            return 7

    with pytest.raises(UnsupportedFormatError, match="castate --store URL upgrade"):
        await PackStore(Legacy()).open()


async def test_states_round_trip_through_packs_and_a_reopen() -> None:
    blobs = MemoryBackend()
    state = {"messages": [{"i": i, "text": os.urandom(200).hex()} for i in range(300)], "big": "z" * 100_000}
    sm = castate.StateManager(blobs)
    for n in range(5):
        state["messages"].append({"i": 1000 + n})
        await sm.save_session("s", state)
    other = castate.StateManager(blobs)
    assert await other.load_session("s") == state


async def test_the_kept_pack_of_a_failed_commit_is_not_taken_as_storing_its_objects() -> None:
    """A blob backend may keep a failed commit's pack; after gc replaced the chain it continued,
    that pack cannot be read, so a retry must write its objects again (seen on Redis)."""

    class KeepsBlobs(MemoryBackend):
        async def commit(self, blobs, updates, *, message="", checks=None):  # type: ignore[no-untyped-def]
            self._put(blobs)  # stored before the checks, as a backend may
            return await super().commit(blobs, updates, message=message, checks=checks)

    blobs = KeepsBlobs()
    a, b = PackStore(blobs), PackStore(blobs)
    await a.open()
    await b.open()
    x, y = raw_obj("removed by gc"), raw_obj("saved after gc")
    await b.put_objects([x], stream="s")
    async with a.gc_exclusive():
        await a.delete_objects([x[0]])
    await b.commit([y], [RefUpdate("sessions/a", cid(1), None)], stream="s")
    fresh = PackStore(blobs)
    await fresh.open()
    assert bytes((await fresh.get_objects([y[0]]))[y[0]]) == y[1]


async def test_a_chain_whose_packs_do_not_add_up_is_not_read() -> None:
    """A pack claiming a place in a chain that its predecessors do not give it (a crafted or
    damaged head) is never decompressed, so it cannot make a reader hold more than it declared."""
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    first, second = raw_obj("first " * 100), raw_obj("second " * 100)
    await store.put_objects([first], stream="s")
    await store.put_objects([second], stream="s")
    heads = {n: parse_pack_head(n[len(PACK_PREFIX) :], d, len(d)) for n, d in (await packs_of(blobs)).items()}
    name = next(n for n, h in heads.items() if h.seq == 1)
    forged = bytearray(blobs._blobs.pop(name)[0])
    struct.pack_into("<Q", forged, 40, 90 << 20)  # chain_raw: far past what its predecessor holds
    await blobs.put_blobs([(PACK_PREFIX + pack_name(bytes(forged)), bytes(forged))])
    await blobs.delete_blobs([i.name for i in await blobs.list_blobs(INDEX_PREFIX)])  # heads are read
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([first[0], second[0]]) == {first[0]}
    assert await fresh.get_objects([second[0]]) == {}


def test_chain_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="chain_max"):
        PackStore(MemoryBackend(), chain_max=1 << 30)


async def test_maintenance_merges_long_chains_into_one_pack() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    items = [raw_obj(f"save {i} " + "text " * 50) for i in range(40)]
    for one in items:
        await store.put_objects([one], stream="s")
    assert len(await packs_of(blobs)) == 40
    async with store.gc_exclusive():
        await store.maintain()
    assert len(await packs_of(blobs)) == 1
    fresh = PackStore(blobs)
    await fresh.open()
    got = await fresh.get_objects([oid for oid, _ in items])
    assert {k: bytes(v) for k, v in got.items()} == dict(items)
    # a writer that was extending the merged chain notices (the epoch) and starts a new one
    await store.put_objects([raw_obj("after")], stream="s")
    assert await fresh.has_objects([raw_obj("after")[0]]) == {raw_obj("after")[0]}


# -- races and damage found in review: each test failed before its fix ------------------------------


class YieldingMemory(MemoryBackend):
    """A memory backend whose every call yields to the event loop, as real I/O does, so tasks of
    one process interleave inside the pack store."""

    async def get_blobs(self, names):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return await super().get_blobs(names)

    async def get_ranges(self, ranges):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return await super().get_ranges(ranges)

    async def list_blobs(self, prefix=""):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return await super().list_blobs(prefix)

    async def commit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return await super().commit(*args, **kwargs)


@pytest.mark.parametrize("delay", range(6))
async def test_a_read_in_the_same_process_during_gc_loses_nothing(delay: int) -> None:
    blobs = YieldingMemory()
    repo = castate.Repository(blobs)
    await repo.open()
    await repo.save("sessions/junk", {"junk": "x" * 500}, stream="s")
    await repo.save("sessions/live", {"live": "y" * 500}, stream="s")
    await repo.delete_refs(["sessions/junk"])
    live = await repo.head("sessions/live")
    store = repo.backend

    async def reader() -> None:
        for _ in range(delay):
            await asyncio.sleep(0)
        await store.get_objects([live])  # a request served while gc rewrites the chain

    task = asyncio.create_task(reader())
    await collect_garbage(store, grace=0, reflog_expire=0)
    await asyncio.gather(task, return_exceptions=True)
    fresh = castate.Repository(blobs)
    assert await fresh.load("sessions/live") == {"live": "y" * 500}


async def test_a_process_sees_another_process_s_gc_before_it_relies_on_its_catalog() -> None:
    """After gc elsewhere rewrote a chain, reads find the objects at their new place, and checks
    made under gc_shared (imports, forks) see what gc deleted."""
    blobs = MemoryBackend()
    a, b = castate.Repository(blobs), castate.Repository(blobs)
    await a.save("sessions/live", {"live": "z" * 600}, stream="s")
    await a.save("sessions/junk", {"junk": "j" * 600}, stream="s")
    junk_root = (await a.resolve("sessions/junk")).root
    await b.open()
    assert await b.backend.has_objects([junk_root]) == {junk_root}
    await a.delete_refs(["sessions/junk"])
    await collect_garbage(a.backend, grace=0, reflog_expire=0)
    async with b.backend.gc_shared():
        assert await b.backend.has_objects([junk_root]) == set()
    other = castate.Repository(blobs)
    await other.open()
    b.backend._cache.clear()
    assert await b.load("sessions/live") == {"live": "z" * 600}


async def test_fsck_quarantine_excludes_writers_while_it_rewrites() -> None:
    blobs = MemoryBackend()
    writer = PackStore(blobs)
    await writer.open()
    x = raw_obj("kept")
    await writer.put_objects([x], stream="s")
    await writer.put_objects([(b"\x01" * 32, x[1])], stream="s")  # a frame under a wrong id
    fsck_side = PackStore(blobs)
    await fsck_side.open()
    real = fsck_side._reload
    y = raw_obj("saved while fsck ran")
    saved: list[int] = []

    async def reload(**kwargs: bool) -> None:
        await real(**kwargs)
        if not saved:  # the first listing of the rewrite is done: a writer commits now
            saved.append(await writer.commit([y], [RefUpdate("sessions/w", cid(2), None)], stream="s"))

    fsck_side._reload = reload  # type: ignore[method-assign]
    assert await fsck_side.quarantine_objects([b"\x01" * 32]) == 1
    assert saved == [1]
    fresh = PackStore(blobs)
    await fresh.open()
    assert bytes((await fresh.get_objects([y[0]]))[y[0]]) == y[1]
    assert bytes((await fresh.get_objects([x[0]]))[x[0]]) == x[1]


async def test_a_gc_that_dies_midway_leaves_no_process_trusting_deleted_packs() -> None:
    class Dying(MemoryBackend):
        fail = False

        async def delete_blobs(self, names):  # type: ignore[no-untyped-def]
            if self.fail:
                self.fail = False
                late.append(castate.Repository(self))  # a process that starts while gc works
                await late[-1].open()
                await super().delete_blobs(names)
                raise ConnectionError("gc lost its connection after deleting")
            return await super().delete_blobs(names)

    late: list[castate.Repository] = []
    blobs = Dying()
    junk = {"doc": "x" * 400, "items": list(range(40))}
    w = castate.Repository(blobs)
    await w.save("sessions/junk", junk)
    await w.delete_refs(["sessions/junk"])
    blobs.fail = True
    with pytest.raises(ConnectionError):
        await collect_garbage(w.backend, grace=0, reflog_expire=0)
    await late[0].save("sessions/new", junk)  # the same content as the garbage gc deleted
    fresh = castate.Repository(blobs)
    assert await fresh.load("sessions/new") == junk


async def test_quarantine_keeps_an_intact_copy_of_an_object_stored_twice() -> None:
    blobs = MemoryBackend()
    a, b = castate.Repository(blobs), castate.Repository(blobs)
    await a.open()
    await b.open()  # neither knows the other's packs: the shared content is stored twice
    state = {"doc": "shared " * 100}
    await a.save("sessions/a", state)
    await b.save("sessions/b", state)
    root = (await a.resolve("sessions/a")).root
    holders = sorted(n for n in blobs._blobs if n.startswith(PACK_PREFIX) and root in blobs._blobs[n][0])
    assert len(holders) == 2
    data, t = blobs._blobs[holders[0]]
    blobs._blobs[holders[0]] = (data[:-1] + bytes([data[-1] ^ 1]), t)
    sm = castate.StateManager(castate.Repository(blobs))
    await sm.fsck()
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([root]) == {root}  # the damaged copy went, the intact one stayed


async def test_a_save_in_the_same_process_as_gc_waits_for_it_and_succeeds(tmp_path: Path) -> None:
    from castate.backends.sqlite import SQLiteBackend

    repo = castate.Repository(SQLiteBackend(tmp_path / "s.db", lock_timeout=5))
    await repo.save("sessions/junk", {"junk": "x" * 500})
    await repo.delete_refs(["sessions/junk"])
    store = repo.backend
    async with store.gc_exclusive():
        save = asyncio.create_task(repo.save("sessions/app", {"n": 1}))
        await asyncio.sleep(0.2)
        assert not save.done()
        await store.delete_objects(list({i.id async for i in store.iter_objects()} - {await repo.head("sessions/app")}))
    assert (await asyncio.wait_for(save, 30)).changed
    await repo.close()


async def test_one_read_across_many_chains_holds_the_cache_budget() -> None:
    blobs = MemoryBackend()
    writer = PackStore(blobs)
    await writer.open()
    ids = []
    for s in range(24):
        for _ in range(3):  # a chain of 768 KiB raw
            oid = os.urandom(32)
            content = os.urandom(16).hex().encode() * (8 << 10)  # 256 KiB that compress to almost nothing
            await writer.put_objects([(oid, b"\x01\x53\x00" + content)], stream=f"s{s}")
        ids.append(oid)  # the last object of each chain: its whole chain is decompressed
    reader = PackStore(blobs, cache_bytes=2 << 20)
    await reader.open()
    tracemalloc.start()
    try:
        got = await reader.get_objects(ids)
        got = {k: bytes(v) for k, v in got.items()}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got) == 24
    assert peak < 14 << 20  # not the 18 MiB of all 24 chains at once: the budget, one chain, the frames


def test_a_pack_head_with_an_absurd_place_in_its_chain_is_refused() -> None:
    data = bytearray(encode_pack([], b"", chain=bytes(16), seq=1, prev=bytes(32), raw_len=0, chain_raw=0, time_ns=0))
    struct.pack_into("<I", data, 32, 1 << 30)  # seq
    with pytest.raises(CorruptFileError, match="inconsistent"):
        parse_pack_head("ab" * 32, bytes(data), len(data))


def test_a_writer_s_pack_head_is_what_a_reader_parses_from_its_bytes() -> None:
    frames = [raw_obj("one"), raw_obj("two " * 40)]
    raw = b"".join(f for _, f in frames)
    info, data = make_pack(
        frames, b"body", chain=b"c" * 16, seq=2, prev=b"p" * 32, raw_len=len(raw), chain_raw=77, time_ns=5
    )
    parsed = parse_pack_head(info.name, data, len(data))
    assert info.name == pack_name(data)
    assert parsed.spans == [(off, length) for _, off, length in info.entries]  # the ids live in segments
    for field in ("chain", "seq", "prev", "raw_len", "chain_raw", "time_ns", "body_off", "body_len", "size"):
        assert getattr(info, field) == getattr(parsed, field), field


async def test_gc_on_a_full_disk_frees_whole_garbage_chains_and_leaves_no_partial_copy() -> None:
    from castate.errors import StoreIOError

    class Full(MemoryBackend):
        full = False

        async def put_blobs(self, items):  # type: ignore[no-untyped-def]
            if self.full:
                await super().put_blobs(items[:1])  # the disk fills half way through
                raise StoreIOError("no space left on device")
            return await super().put_blobs(items)

    blobs = Full()
    store = PackStore(blobs)
    await store.open()
    garbage = [raw_obj(f"garbage {i} " * 30) for i in range(3)]
    mixed = [raw_obj(f"kept {i} " * 30) for i in range(2)] + [raw_obj("doomed too " * 30)]
    await store.put_objects(garbage, stream="a")  # a chain of garbage only
    await store.put_objects(mixed, stream="b")  # a chain gc must rewrite
    before = {i.name for i in await blobs.list_blobs(PACK_PREFIX)}
    blobs.full = True
    with pytest.raises(StoreIOError):
        await store.delete_objects([oid for oid, _ in garbage] + [mixed[2][0]])
    blobs.full = False
    after = {i.name for i in await blobs.list_blobs(PACK_PREFIX)}
    assert len(after) == 1  # the garbage chain went; no half-written copy stayed
    assert after < before
    fresh = PackStore(blobs)
    await fresh.open()
    assert await fresh.has_objects([oid for oid, _ in garbage + mixed]) == {oid for oid, _ in mixed}
    assert (await blobs.get_ref(EPOCH_REF) or b"")[0] == 2  # "dirty": readers list the packs until a gc completes


async def test_a_read_of_chains_cached_and_not_does_not_lose_the_cached_ones_midway() -> None:
    """A writer's cache holds its last chains; one read asking for those and older ones
    decompressed the older first, which pushed the cached ones out before their turn."""
    blobs = MemoryBackend()
    store = PackStore(blobs, cache_bytes=1 << 20, chain_max=1 << 16)
    await store.open()
    items = [raw_obj(f"{n} " + "y" * (300 << 10)) for n in range(6)]
    for item in items:
        await store.put_objects([item], stream="s")  # a chain each; the cache keeps the last three
    got = await store._read([oid for oid, _ in items])  # one pass (get_objects would retry once)
    assert {k: bytes(v) for k, v in got.items()} == dict(items)


async def test_a_process_that_opened_a_plain_empty_store_cannot_write_after_another_encrypts_it(tmp_path: Path) -> None:
    plain = castate.Repository.at(str(tmp_path / "s"))
    await plain.open(create=True)
    enc = castate.Repository.at(str(tmp_path / "s"), key=castate.RawKey(b"k" * 32))
    await enc.open(create=True)
    await enc.save("sessions/a", {"x": 1})
    with pytest.raises(castate.StoreError, match="made encrypted after this process opened it"):
        await plain.save("sessions/b", {"secret": "plaintext"})
    assert list(await enc.list_refs("sessions/")) == ["sessions/a"]
    data = b"".join(p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert b"plaintext" not in data
    await plain.close()
    await enc.close()
