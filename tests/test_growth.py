"""Growth of a history: each save's new objects and bytes, computed once per commit and
continued incrementally, checked against reachability computed independently."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import castate
from castate.repository.growth import GrowthIndex
from castate.repository.snapshot import fetch_tree
from tests.memory_objects import MemoryObjects


class Counting(MemoryObjects):
    def __init__(self) -> None:
        super().__init__()
        self.read = 0

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        self.read += len(ids)
        return await super().get_objects(ids)


def state(step: int) -> dict:
    return {
        "step": step,
        "messages": [
            {"role": "user", "content": hashlib.sha256(b"%d" % i).hexdigest() * 4} for i in range(60 + 2 * step)
        ],
        "notes": "n" * 3000,
    }


async def reach(backend: MemoryObjects, repo: castate.Repository, cid: bytes) -> set[bytes]:
    root = (await repo.read_commit(cid)).root
    return set(await fetch_tree(backend, root)) | {cid}


async def chain_of(sm: castate.StateManager, session: str) -> list[bytes]:
    entries = await sm.repository.log(castate.repository.refs.session_ref(session))
    return [cid for cid, _ in reversed(entries)]


async def test_each_save_counts_the_objects_its_history_had_not_reached() -> None:
    backend = Counting()
    sm = castate.StateManager(backend)
    for step in range(6):
        await sm.save_session("run", state(step))
    await sm.save_session("run", state(2))  # content that comes back after being dropped
    chain = await chain_of(sm, "run")
    growth = await GrowthIndex(backend).history(chain)

    assert [g.commit for g in growth] == chain
    earlier: set[bytes] = set()
    for g in growth:
        mine = await reach(backend, sm.repository, g.commit)
        new = mine - earlier
        assert g.new_objects == len(new)
        assert g.new_bytes == sum(len(backend._objects[o][0]) for o in new)
        assert g.complete
        earlier |= mine
    assert growth[1].new_bytes < growth[0].new_bytes / 2  # an append rewrites the tail run, not the list
    assert growth[-1].new_objects == 1  # state(2) again: its tree was stored already, only the commit is new


async def test_logical_size_matches_stats() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    for step in range(3):
        await sm.save_session("run", state(step))
    growth = await GrowthIndex(backend).history(await chain_of(sm, "run"))
    stats = await sm.stats()
    assert growth[-1].logical_bytes == stats.largest[0].head_bytes
    assert growth[0].logical_bytes < growth[1].logical_bytes < growth[2].logical_bytes


async def test_later_calls_read_only_new_saves_and_forks_continue_their_source() -> None:
    backend = Counting()
    sm = castate.StateManager(backend)
    for step in range(5):
        await sm.save_session("run", state(step))
    index = GrowthIndex(backend)
    first = await index.history(await chain_of(sm, "run"))

    backend.read = 0
    again = await index.history(await chain_of(sm, "run"))
    assert again == first
    assert backend.read == 0  # everything cached

    await sm.save_session("run", state(5))
    backend.read = 0
    more = await index.history(await chain_of(sm, "run"))
    assert more[:5] == first
    assert backend.read == more[5].new_objects  # only the new save's new objects were read

    await sm.fork("run", "retry")
    await sm.save_session("retry", {**state(5), "retry": True})
    fresh = await GrowthIndex(backend).history(await chain_of(sm, "retry"))
    backend.read = 0
    forked = await index.history(await chain_of(sm, "retry"))
    assert forked == fresh
    assert backend.read == forked[-1].new_objects


async def test_damage_marks_a_save_incomplete() -> None:
    backend = MemoryObjects()
    sm = castate.StateManager(backend)
    await sm.save_session("run", state(0))
    await sm.save_session("run", state(1))
    chain = await chain_of(sm, "run")
    last = await sm.repository.read_commit(chain[-1])
    del backend._objects[last.root]
    growth = await GrowthIndex(backend).history(chain)
    assert growth[0].complete
    assert not growth[1].complete


async def test_a_later_index_continues_from_an_export_and_a_shorter_history_is_measured_again() -> None:
    backend = Counting()
    sm = castate.StateManager(backend)
    for step in range(4):
        await sm.save_session("run", state(step))
    chain = await chain_of(sm, "run")
    first = GrowthIndex(backend)
    measured = await first.history(chain)

    later = GrowthIndex(backend)
    later.absorb(first.export([chain]))
    backend.read = 0
    assert later.known(chain) == measured
    await sm.save_session("run", state(4))
    longer = await chain_of(sm, "run")
    assert later.pending(longer) == 1  # the walk continues where the earlier process stopped
    more = await later.history(longer)
    assert more == await GrowthIndex(backend).history(longer)
    assert backend.read == more[-1].new_objects + sum(g.new_objects for g in more)  # the fresh index read all

    # A history that starts later (gc removed its oldest saves) is not the one measured:
    # its first save holds the whole state, so nothing known is reused for it.
    assert later.known(longer[1:]) is None
    assert later.pending(longer[1:]) == 4
    shorter = await later.history(longer[1:])
    assert shorter == await GrowthIndex(backend).history(longer[1:])
    assert shorter[0].new_objects > more[1].new_objects
