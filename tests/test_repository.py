"""The repository: saves as commits, compare-and-swap on refs, history, and no-op saves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.backends import MemoryBackend, RefUpdate
from castate.errors import ConflictError, MissingObjectError, NotFoundError
from castate.repository.gc import collect_garbage
from castate.repository.packs import PackInfo, PackStore
from castate.repository.packs.format import PACK_PREFIX, parse_pack_head


async def count_objects(repo: castate.Repository) -> int:
    return sum([1 async for _ in repo.backend.iter_objects()])


async def test_save_and_load(repo: castate.Repository) -> None:
    state = {"a": [1, 2, 3], "b": {"c": "d"}}
    result = await repo.save("sessions/x", state, session="x")
    assert result.changed
    assert await repo.load("sessions/x") == state
    assert await repo.load("sessions/missing") is None


async def test_saving_the_same_state_twice_writes_nothing(repo: castate.Repository) -> None:
    state = {"messages": [{"content": f"m{i}" * 50} for i in range(500)], "n": 1}
    first = await repo.save("sessions/x", state)
    before = await count_objects(repo)
    again = await repo.save("sessions/x", state)
    assert not again.changed
    assert again.commit == first.commit
    assert again.objects_written == 0
    assert await count_objects(repo) == before


async def test_saves_form_a_history(repo: castate.Repository) -> None:
    commits = []
    for i in range(5):
        commits.append((await repo.save("sessions/h", {"step": i}, session="h", meta={"i": i})).commit)
    log = await repo.log("sessions/h")
    assert [cid for cid, _ in log] == commits[::-1]
    assert [c.meta["i"] for _, c in log] == [4, 3, 2, 1, 0]
    assert log[-1][1].parents == ()
    assert all(c.session == "h" for _, c in log)
    assert [c.parents for _, c in log[:-1]] == [(p,) for p in commits[::-1][1:]]
    assert (await repo.resolve("sessions/h")).meta == {"i": 4}
    with pytest.raises(NotFoundError):
        await repo.resolve("sessions/none")


async def test_a_stale_writer_gets_a_conflict(store_path: Path) -> None:
    a = castate.Repository(castate.LocalBackend(store_path))
    b = castate.Repository(castate.LocalBackend(store_path))
    try:
        await a.save("sessions/s", {"v": 1})
        assert await b.load("sessions/s") == {"v": 1}
        await b.save("sessions/s", {"v": 2})
        with pytest.raises(ConflictError):
            await a.save("sessions/s", {"v": 3})
        assert await a.load("sessions/s") == {"v": 2}
        await a.save("sessions/s", {"v": 3})  # after reading the new head, a can continue
        assert await b.load("sessions/s") == {"v": 3}
        await a.save("sessions/s", {"v": 4})
        await b.save("sessions/s", {"v": 5}, overwrite=True)
        assert await a.load("sessions/s") == {"v": 5}
    finally:
        await a.close()
        await b.close()


async def test_incremental_saves_write_only_what_changed() -> None:
    repo = castate.Repository(MemoryBackend())
    state: dict[str, Any] = {"messages": [{"content": f"message {i} " * 30} for i in range(5_000)], "step": 0}
    await repo.save("sessions/big", state)
    for step in range(1, 20):
        state["messages"].append({"content": f"new message {step} " * 30})
        state["step"] = step
        result = await repo.save("sessions/big", state)
        assert result.objects_written <= 8
    assert await repo.load("sessions/big") == state


async def test_atomic_extra_updates(repo: castate.Repository) -> None:
    saved = await repo.save("sessions/x", {"v": 1})
    await repo.save("sessions/x", {"v": 2}, extra_updates=[RefUpdate("checkpoints/x/first", saved.commit, None)])
    assert await repo.head("checkpoints/x/first") == saved.commit
    with pytest.raises(ConflictError):
        await repo.save("sessions/x", {"v": 3}, extra_updates=[RefUpdate("checkpoints/x/first", saved.commit, None)])
    assert await repo.load("sessions/x") == {"v": 2}


async def test_copy_and_delete_refs(repo: castate.Repository) -> None:
    saved = await repo.save("sessions/x", {"v": 1})
    assert await repo.copy_ref("sessions/x", "checkpoints/x/a") == saved.commit
    assert await repo.delete_refs(["checkpoints/x/a", "checkpoints/x/none"]) == 1
    assert await repo.list_refs("checkpoints/") == {}
    log = await repo.reflog("checkpoints/x/a")
    assert [(e.old, e.new) for e in log] == [(None, saved.commit), (saved.commit, None)]


async def test_ref_moves_for_the_layers_above(repo: castate.Repository) -> None:
    """move_ref (compare-and-swap), point_ref (the same, for a commit checked whole first) and
    delete_refs_at (all or none): what the sessions package and the UI move refs with."""
    one = (await repo.save("sessions/x", {"v": 1})).commit
    two = (await repo.save("sessions/x", {"v": 2})).commit
    await repo.move_ref("checkpoints/x/a", one, expected=None, message="make")
    with pytest.raises(ConflictError):
        await repo.move_ref("checkpoints/x/a", two, expected=None)  # it exists: not "expected absent"
    with pytest.raises(ConflictError):
        await repo.move_ref("checkpoints/x/a", two, expected=two)  # it is at one, not two
    await repo.move_ref("checkpoints/x/a", two, expected=one)
    await repo.point_ref("sessions/y", one, expected=None, holders=["sessions/x"], message="fork")  # no ref holds one
    assert await repo.load("sessions/y") == {"v": 1}
    with pytest.raises(ConflictError):
        await repo.delete_refs_at({"checkpoints/x/a": two, "sessions/y": two})  # y is at one: nothing goes
    assert set(await repo.list_refs()) == {"sessions/x", "sessions/y", "checkpoints/x/a"}
    await repo.delete_refs_at({"checkpoints/x/a": two, "sessions/y": one}, message="clean")
    assert set(await repo.list_refs()) == {"sessions/x"}
    log = await repo.reflog("checkpoints/x/a")
    assert [(e.old, e.new, e.message) for e in log] == [(None, one, "make"), (one, two, ""), (two, None, "clean")]


async def test_point_ref_refuses_a_commit_whose_tree_gc_removed() -> None:
    repo = castate.Repository(MemoryBackend())
    old = (await repo.save("sessions/x", {"big": "x" * 5000})).commit
    await repo.save("sessions/x", {"big": "y" * 5000})
    await collect_garbage(repo.backend, grace=0, reflog_expire=0)  # the first save's tree goes
    with pytest.raises(MissingObjectError):
        await repo.point_ref("sessions/fork", old, expected=None)
    assert await repo.head("sessions/fork") is None  # the ref was never pointed at the broken tree


async def test_save_also_points_more_refs_at_the_new_commit(repo: castate.Repository) -> None:
    first = await repo.save("work/tip", {"v": 1}, also=["checkpoints/a"])
    assert await repo.head("checkpoints/a") == first.commit
    second = await repo.save("work/tip", {"v": 1}, also=["checkpoints/b"])  # same state, still a commit
    assert second.changed
    assert await repo.head("checkpoints/b") == second.commit
    assert await repo.head("checkpoints/a") == first.commit
    log = await repo.reflog()
    assert {e.name for e in log if e.new == second.commit} == {"work/tip", "checkpoints/b"}
    assert len({e.time_ns for e in log if e.new == second.commit}) == 1  # one atomic update
    # a ref moved through ``also`` is not assumed unchanged by a later save of that ref
    third = await repo.save("work/tip", {"v": 3}, also=["checkpoints/a"])
    fourth = await repo.save("checkpoints/a", {"v": 4})
    assert (await repo.read_commit(fourth.commit)).parents == (third.commit,)


async def test_save_new_creates_without_looking_and_refuses_an_existing_ref(repo: castate.Repository) -> None:
    made = await repo.save("kv/one", {"v": 1}, new=True)
    assert await repo.load("kv/one") == {"v": 1}
    with pytest.raises(ConflictError):
        await repo.save("kv/one", {"v": 2}, new=True)
    assert await repo.head("kv/one") == made.commit


async def pack_heads(repo: castate.Repository) -> list[PackInfo]:
    """The heads of the packs a local store holds, read from its blobs."""
    store = repo.backend
    assert isinstance(store, PackStore)
    assert isinstance(store.blobs, castate.LocalBackend)
    names = [info.name for info in await store.blobs.list_blobs(PACK_PREFIX)]
    return [parse_pack_head(n[len(PACK_PREFIX) :], d, len(d)) for n, d in (await store.blobs.get_blobs(names)).items()]


async def test_saves_of_one_stream_share_a_compression_chain(store_path: Path) -> None:
    async with castate.Repository(castate.LocalBackend(store_path)) as repo:
        text = os.urandom(2000).hex()  # 4,000 bytes that compress only to about half alone
        for i in range(3):
            await repo.save(f"checkpoints/t/{i}", {"doc": text + str(i)}, stream="thread-t")
        await repo.save("sessions/other", {"doc": text}, stream="other")
        chains: dict[bytes, list[PackInfo]] = {}
        for head in await pack_heads(repo):
            chains.setdefault(head.chain, []).append(head)
        assert sorted(len(packs) for packs in chains.values()) == [1, 3]  # a chain per stream
        shared = sorted(next(packs for packs in chains.values() if len(packs) == 3), key=lambda p: p.seq)
        assert [p.seq for p in shared] == [0, 1, 2]
        assert shared[0].body_len > 1_900  # the text itself
        assert all(p.body_len < 300 for p in shared[1:])  # only what differs: the chain knows the text
        for i in range(3):
            assert await repo.load(f"checkpoints/t/{i}") == {"doc": text + str(i)}


async def test_reading_history_decompresses_each_pack_at_most_once(store_path: Path) -> None:
    """A log follows a session's saves parent by parent, each in a pack deeper in its chain: a
    reader continues the chain it decompressed, never starting it over for the next commit.
    (Format 2 keeps a save's commit in the save's pack: a log decompresses the states too,
    at most 1 MiB per chain, docs/format.md §6.3.)"""
    async with castate.Repository(castate.LocalBackend(store_path)) as repo:
        for i in range(30):
            await repo.save("sessions/s", {"doc": f"state {i} " + os.urandom(20_000).hex()})
    async with castate.Repository(castate.LocalBackend(store_path)) as repo:
        store = repo.backend
        assert isinstance(store, PackStore)
        raw = sum(p.raw_len for p in await pack_heads(repo))
        decompressed: list[int] = []
        real = store._cache.decompress

        def counting(packs: list[PackInfo], blobs: dict[str, bytes]) -> None:
            decompressed.extend(p.raw_len for p in packs)
            real(packs, blobs)

        store._cache.decompress = counting  # type: ignore[method-assign]
        entries = await repo.log("sessions/s")
        assert len(entries) == 30
        assert raw > 30 * 40_000
        assert 0 < sum(decompressed) <= raw
        assert (await repo.load("sessions/s"))["doc"].startswith("state 29 ")


async def test_a_save_after_a_load_that_found_nothing_does_not_build_on_a_session_created_since(
    tmp_path: Path,
) -> None:
    """A writer that loaded a missing session and then saved used to commit on top of whatever
    another writer had created meanwhile: the other writer's state was silently replaced."""
    first = castate.Repository(castate.LocalBackend(tmp_path / "store"))
    second = castate.Repository(castate.LocalBackend(tmp_path / "store"))
    try:
        assert await first.load("sessions/x") is None
        await second.save("sessions/x", {"by": "second"})
        with pytest.raises(ConflictError) as caught:
            await first.save("sessions/x", {"by": "first"})
        assert caught.value.expected is None
        assert await second.load("sessions/x") == {"by": "second"}
        assert await first.load("sessions/x") == {"by": "second"}  # a load shows the new head...
        await first.save("sessions/x", {"by": "first"})  # ...and a save may then build on it
    finally:
        await first.close()
        await second.close()
