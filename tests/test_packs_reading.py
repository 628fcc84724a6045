"""Reading many chains in one call, within the chain cache's budget or past it, and damage in one of them."""

from __future__ import annotations

import os

import pytest

from castate.backends.memory import MemoryBackend
from castate.codec.objects import KIND_STR, encode_frame, object_id
from castate.errors import CorruptObjectError
from castate.repository.packs import PackStore
from castate.repository.packs.format import PACK_PREFIX


def raw_obj(text: str) -> tuple[bytes, bytes]:
    content = text.encode()
    return object_id(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)


async def _streams(blobs: MemoryBackend, n: int) -> dict[str, list[tuple[bytes, bytes]]]:
    store = PackStore(blobs)
    await store.open()
    saved: dict[str, list[tuple[bytes, bytes]]] = {}
    for save in range(6):
        for s in range(n):
            items = [raw_obj(f"{s} {save} {i} " + os.urandom(400).hex()) for i in range(5)]
            await store.put_objects(items, stream=f"s{s}")
            saved.setdefault(f"s{s}", []).extend(items)
    await store.close()
    return saved


async def test_objects_of_many_chains_read_back_in_one_call() -> None:
    blobs = MemoryBackend()
    saved = await _streams(blobs, 6)
    everything = dict(item for items in saved.values() for item in items)
    for budget in (64 << 20, 8 << 10):  # every chain cached; each pushed out by the next
        fresh = PackStore(blobs, cache_bytes=budget)
        await fresh.open()
        got = await fresh.get_objects(list(everything))
        assert {k: bytes(v) for k, v in got.items()} == everything
        await fresh.close()


async def test_a_damaged_chain_among_many_is_named_and_the_others_read() -> None:
    blobs = MemoryBackend()
    saved = await _streams(blobs, 4)
    damaged = saved["s2"]
    fresh = PackStore(blobs)
    await fresh.open()
    place = fresh._cat.place(damaged[-1][0])
    assert place is not None
    holder = PACK_PREFIX + place[0].name  # the last pack of that chain
    data, t = blobs._blobs[holder]
    blobs._blobs[holder] = (data[:-1] + bytes([data[-1] ^ 1]), t)
    with pytest.raises(CorruptObjectError) as err:
        await fresh.get_objects([oid for items in saved.values() for oid, _ in items])
    assert err.value.object_id in {oid.hex() for oid, _ in damaged}
    others = dict(item for s, items in saved.items() if s != "s2" for item in items)
    got = await fresh.get_objects(list(others))
    assert {k: bytes(v) for k, v in got.items()} == others
