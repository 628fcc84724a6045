"""gc regroups the objects of long chains by lifetime, so a restore decompresses about what it needs."""

from __future__ import annotations

import os
from typing import Any

import pytest

import castate
from castate.backends.memory import MemoryBackend
from castate.repository.packs import PackStore
from castate.repository.packs.chains import ChainCache
from castate.repository.packs.layout import first_use, lifetime_class
from castate.repository.packs.segments import INDEX_PREFIX

CHAIN = 128 << 10  # about 36 saves a chain: every chain but the last is regrouped


def test_lifetime_classes_are_about_a_factor_four_wide() -> None:
    assert [lifetime_class(10, 10 + d) for d in (0, 2, 3, 14, 15, 62, 63)] == [1, 1, 2, 2, 3, 3, 4]
    assert lifetime_class(10, 5) == 1  # a clock that went back: the shortest class
    assert first_use([10, 20, 30], 25) == 1
    assert first_use([10, 20, 30], 5) == 0


class Counting:
    """Raw bytes the chain caches of this process decompress."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raw = 0
        real = ChainCache.decompress

        def decompress(cache: ChainCache, packs: list[Any], blobs: dict[str, bytes]) -> None:
            self.raw += sum(p.raw_len for p in packs)
            real(cache, packs, blobs)

        monkeypatch.setattr(ChainCache, "decompress", decompress)


async def test_gc_regroups_long_chains_so_an_old_checkpoint_reads_less(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state that keeps a few objects from all along its history (a growing cache), among
    short-lived ones: before gc, reading them decompresses every chain up to each."""
    blobs = MemoryBackend()
    sm = castate.StateManager(PackStore(blobs, chain_max=CHAIN))
    memos: list[str] = []
    recent: list[str] = []
    states: dict[str, dict[str, Any]] = {}
    for n in range(160):
        if n % 4 == 2:
            memos = [*memos, {"n": n, "text": os.urandom(300).hex()}]  # a node kept from then on
        recent = [*recent[-3:], os.urandom(300).hex()]  # each lives four saves
        state = {"memos": memos, "step": n, "recent": recent, "pad": os.urandom(600).hex()}
        await sm.save_session("s", state)
        states[await sm.create_checkpoint("s", f"step-{n}")] = state
    await sm.close()
    middle = next(cp for cp, s in states.items() if s["step"] == 100)

    counting = Counting(monkeypatch)

    async def restore(cp: str) -> tuple[dict[str, Any], int]:
        before = counting.raw
        fresh = castate.StateManager(PackStore(blobs, chain_max=CHAIN))
        try:
            return await fresh.restore_checkpoint(cp), counting.raw - before
        finally:
            await fresh.close()

    state, read_before = await restore(middle)
    assert state == states[middle]
    packs_before = len(await blobs.list_blobs("packs/"))

    gc = castate.StateManager(PackStore(blobs, chain_max=CHAIN))
    report = await gc.gc()
    await gc.close()
    assert report.deleted == 0  # everything is live: only where it is changed

    state, read_after = await restore(middle)
    assert state == states[middle]
    # The long-lived objects are no longer each behind short-lived ones in a chain of its own.
    assert read_after * 3 < read_before * 2  # 1.8x to 2x less here; 2.2x to 3x on the bench (docs/performance.md)
    assert len(await blobs.list_blobs("packs/")) < packs_before
    assert len(await blobs.list_blobs(INDEX_PREFIX)) == 1
    for cp, expected in states.items():  # every checkpoint reads back the same
        assert (await restore(cp))[0] == expected


async def test_regrouping_keeps_objects_no_ref_reaches() -> None:
    """Young unreferenced objects (a save in progress) and objects only the reflog keeps are
    kept by gc's grace; regrouping puts them in a chain of their own, in write order."""
    blobs = MemoryBackend()
    store = PackStore(blobs)
    await store.open()
    sm = castate.StateManager(store)
    for n in range(20):
        await sm.save_session("s", {"n": n, "text": os.urandom(200).hex()})
    loose = [castate_obj(f"loose {i}") for i in range(20)]
    for one in loose:
        await store.put_objects([one], stream="other")
    report = await sm.gc()
    assert report.deleted == 0
    fresh = PackStore(blobs)
    await fresh.open()
    got = await fresh.get_objects([oid for oid, _ in loose])
    assert {k: bytes(v) for k, v in got.items()} == dict(loose)
    assert (await castate.StateManager(fresh).load_session("s"))["n"] == 19
    await sm.close()


def castate_obj(text: str) -> tuple[bytes, bytes]:
    from castate.codec.objects import KIND_STR, encode_frame, object_id

    content = text.encode()
    return object_id(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)


async def test_a_regrouping_that_fails_part_way_leaves_the_old_chains_and_no_new_packs() -> None:
    class FullDisk(MemoryBackend):
        puts = 0
        fail_after: int | None = None

        async def put_blobs(self, items):  # type: ignore[no-untyped-def]
            self.puts += 1
            if self.fail_after is not None and self.puts > self.fail_after:
                raise OSError(28, "No space left on device")
            return await super().put_blobs(items)

    blobs = FullDisk()
    sm = castate.StateManager(PackStore(blobs, chain_max=CHAIN))
    states = {}
    for n in range(60):
        state = {"n": n, "keep": {"text": "k" * 400}, "pad": os.urandom(800).hex()}
        await sm.save_session("s", state)
        states[await sm.create_checkpoint("s", f"step-{n}")] = state
    await sm.close()
    before = {i.name for i in await blobs.list_blobs("packs/")}
    blobs.fail_after = 1  # the first regrouped chain is written, the second is not
    gc = castate.StateManager(PackStore(blobs, chain_max=CHAIN))
    with pytest.raises(OSError, match="No space"):
        await gc.gc()
    await gc.close()
    assert {i.name for i in await blobs.list_blobs("packs/")} == before
    blobs.fail_after = None
    fresh = castate.StateManager(PackStore(blobs, chain_max=CHAIN))
    for cp, expected in states.items():
        assert await fresh.restore_checkpoint(cp) == expected
    await fresh.close()


async def test_regrouped_chains_are_left_alone_by_the_next_gc_whatever_the_chain_bound() -> None:
    blobs = MemoryBackend()
    store = PackStore(blobs, chain_max=4 << 20)
    await store.open()
    for n in range(80):  # one chain of 80 packs, 3.2 MB
        await store.put_objects([castate_obj(f"{n} " + os.urandom(20_000).hex())], stream="s")
    async with store.gc_exclusive():
        await store.maintain()
    once = {i.name for i in await blobs.list_blobs("packs/")}
    assert len(once) < 16
    async with store.gc_exclusive():
        await store.maintain()
    assert {i.name for i in await blobs.list_blobs("packs/")} == once
