"""The backend conformance suite: every backend's test module subclasses one of these classes.

A subclass provides ``make_backend`` (a fresh, empty, unopened backend) and, for backends
that persist (``PersistentBackendConformance``), ``reopen`` (a new backend object over the
same storage, made with the constructor ``options`` given, such as ``lock_timeout``).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator

import blake3
import pytest

from castate.backends import ANY, Backend, RefUpdate
from castate.codec.objects import KIND_STR, encode_frame, object_id
from castate.errors import ConflictError, InvalidKeyError, NotFoundError, StoreError
from castate.repository import refs as names


def obj(text: str) -> tuple[bytes, bytes]:
    content = text.encode()
    return object_id(KIND_STR, content), encode_frame(KIND_STR, content)


def cid(n: int) -> bytes:
    return blake3.blake3(f"commit-{n}".encode()).digest()


class BackendConformance:
    """Behaviour every backend must have."""

    async def make_backend(self) -> Backend:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    async def backend(self) -> AsyncIterator[Backend]:
        b = await self.make_backend()
        await b.open()
        yield b
        await b.close()

    # -- objects --------------------------------------------------------------------------

    async def test_put_get_roundtrip(self, backend: Backend) -> None:
        items = [obj(f"value {i}" * (i + 1)) for i in range(20)]
        assert await backend.put_objects(items) == 20
        got = await backend.get_objects([oid for oid, _ in items])
        assert {k: bytes(v) for k, v in got.items()} == dict(items)

    async def test_put_is_put_if_absent(self, backend: Backend) -> None:
        a, b = obj("a"), obj("b")
        assert await backend.put_objects([a]) == 1
        assert await backend.put_objects([a, b]) == 1
        assert await backend.put_objects([a, b, b]) == 0

    async def test_duplicates_within_one_batch_count_once(self, backend: Backend) -> None:
        a = obj("dup")
        assert await backend.put_objects([a, a, a]) == 1

    async def test_missing_objects_are_absent(self, backend: Backend) -> None:
        a = obj("present")
        await backend.put_objects([a])
        missing = object_id(KIND_STR, b"never stored")
        got = await backend.get_objects([a[0], missing])
        assert set(got) == {a[0]}
        assert await backend.has_objects([a[0], missing]) == {a[0]}

    async def test_empty_batches(self, backend: Backend) -> None:
        assert await backend.put_objects([]) == 0
        assert await backend.get_objects([]) == {}
        assert await backend.has_objects([]) == set()

    async def test_large_object(self, backend: Backend) -> None:
        content = os.urandom(3 << 20)
        item = (object_id(KIND_STR, content), encode_frame(KIND_STR, content))
        await backend.put_objects([item])
        assert bytes((await backend.get_objects([item[0]]))[item[0]]) == item[1]

    async def test_delete_objects(self, backend: Backend) -> None:
        items = [obj(f"d{i}") for i in range(10)]
        await backend.put_objects(items)
        doomed = [oid for oid, _ in items[:4]]
        assert await backend.delete_objects(doomed) == 4
        assert await backend.has_objects([oid for oid, _ in items]) == {oid for oid, _ in items[4:]}
        survivors = await backend.get_objects([oid for oid, _ in items[4:]])
        assert {k: bytes(v) for k, v in survivors.items()} == dict(items[4:])
        assert await backend.delete_objects(doomed) == 0

    async def test_iter_objects_lists_everything(self, backend: Backend) -> None:
        items = [obj(f"it{i}") for i in range(15)]
        await backend.put_objects(items[:7])
        await backend.put_objects(items[7:])
        seen = {info.id: info async for info in backend.iter_objects()}
        assert set(seen) == {oid for oid, _ in items}
        assert all(info.size > 0 and info.time_ns > 0 for info in seen.values())

    # -- refs -------------------------------------------------------------------------------

    async def test_ref_create_read_move_delete(self, backend: Backend) -> None:
        assert await backend.get_ref("sessions/a") is None
        await backend.update_refs([RefUpdate("sessions/a", cid(1), None)], message="create")
        assert await backend.get_ref("sessions/a") == cid(1)
        await backend.update_refs([RefUpdate("sessions/a", cid(2), cid(1))], message="move")
        assert await backend.get_ref("sessions/a") == cid(2)
        await backend.update_refs([RefUpdate("sessions/a", None, cid(2))], message="delete")
        assert await backend.get_ref("sessions/a") is None

    async def test_the_longest_ref_names(self, backend: Backend) -> None:
        """A checkpoint of a 1024-byte session id and a 1024-byte name, both percent-encoded at
        three characters a byte, the worst case (incompressible to PostgreSQL's index too)."""
        rng = random.Random(5)
        session = names.encode_part("".join(chr(rng.randrange(0x800, 0xD7FF)) for _ in range(341)) + "x")
        label = names.encode_part("".join(chr(rng.randrange(0x800, 0xD7FF)) for _ in range(341)) + "y")
        ref = f"{names.CHECKPOINTS}{session}/{label}/20261127T110102.123456Z-3fa9c1"
        assert len(ref) > 6000
        try:
            await backend.update_refs([RefUpdate(ref, cid(1), None)], message="longest")
        except InvalidKeyError:  # PostgreSQL: past what its index holds once compressed (docs/backends.md)
            assert await backend.list_refs() == {}
            await backend.update_refs([RefUpdate(ref[:2000], cid(1), None)])  # and the store goes on
            return
        assert await backend.get_ref(ref) == cid(1)
        assert await backend.list_refs(f"{names.CHECKPOINTS}{session}/") == {ref: cid(1)}
        assert [e.name for e in await backend.reflog(ref)] == [ref]

    async def test_compare_and_swap_conflict_changes_nothing(self, backend: Backend) -> None:
        await backend.update_refs([RefUpdate("r/one", cid(1), None), RefUpdate("r/two", cid(2), None)])
        with pytest.raises(ConflictError):
            await backend.update_refs([RefUpdate("r/one", cid(3), cid(1)), RefUpdate("r/two", cid(4), cid(9))])
        assert await backend.get_refs(["r/one", "r/two"]) == {"r/one": cid(1), "r/two": cid(2)}
        with pytest.raises(ConflictError):
            await backend.update_refs([RefUpdate("r/one", cid(5), None)])
        assert await backend.get_ref("r/one") == cid(1)

    async def test_unconditional_update(self, backend: Backend) -> None:
        await backend.update_refs([RefUpdate("r/x", cid(1), ANY)])
        await backend.update_refs([RefUpdate("r/x", cid(2), ANY)])
        assert await backend.get_ref("r/x") == cid(2)

    async def test_list_refs_by_prefix(self, backend: Backend) -> None:
        await backend.update_refs(
            [
                RefUpdate("sessions/a", cid(1), None),
                RefUpdate("sessions/b", cid(2), None),
                RefUpdate("kv/a", cid(3), None),
            ]
        )
        assert await backend.list_refs("sessions/") == {"sessions/a": cid(1), "sessions/b": cid(2)}
        assert set(await backend.list_refs()) == {"sessions/a", "sessions/b", "kv/a"}
        assert await backend.list_refs("nothing/") == {}

    async def test_reflog_records_every_change(self, backend: Backend) -> None:
        await backend.update_refs([RefUpdate("sessions/a", cid(1), None)], message="first")
        await backend.update_refs([RefUpdate("sessions/a", cid(2), cid(1))], message="second")
        await backend.update_refs([RefUpdate("sessions/b", cid(3), None)], message="other")
        log = await backend.reflog("sessions/a")
        assert [(e.old, e.new, e.message) for e in log] == [(None, cid(1), "first"), (cid(1), cid(2), "second")]
        assert log[0].time_ns <= log[1].time_ns
        assert len(await backend.reflog()) == 3

    async def test_copy_ref(self, backend: Backend) -> None:
        await backend.update_refs([RefUpdate("sessions/a", cid(7), None)])
        assert await backend.copy_ref("sessions/a", "checkpoints/a/x") == cid(7)
        assert await backend.get_ref("checkpoints/a/x") == cid(7)
        with pytest.raises(ConflictError):
            await backend.copy_ref("sessions/a", "checkpoints/a/x")
        with pytest.raises(NotFoundError):
            await backend.copy_ref("sessions/missing", "checkpoints/missing/x")
        assert await backend.get_ref("checkpoints/missing/x") is None

    async def test_commit_writes_objects_then_moves_refs(self, backend: Backend) -> None:
        items = [obj("c1"), obj("c2")]
        written = await backend.commit(items, [RefUpdate("sessions/c", items[0][0], None)], message="save")
        assert written == 2
        assert await backend.get_ref("sessions/c") == items[0][0]
        with pytest.raises(ConflictError):
            await backend.commit([obj("c3")], [RefUpdate("sessions/c", items[1][0], None)])
        assert await backend.get_ref("sessions/c") == items[0][0]

    # -- maintenance -------------------------------------------------------------------------

    async def test_expire_reflog_keeps_refs(self, backend: Backend) -> None:
        await backend.update_refs([RefUpdate("sessions/e", cid(1), None)], message="old")
        cutoff = (await backend.reflog("sessions/e"))[-1].time_ns + 1
        await backend.update_refs([RefUpdate("sessions/e", cid(2), cid(1))], message="new")
        await backend.update_refs([RefUpdate("sessions/f", cid(3), None)], message="newer")
        assert await backend.expire_reflog(cutoff) >= 1
        assert [e.message for e in await backend.reflog()] == ["new", "newer"]
        assert await backend.get_refs(["sessions/e", "sessions/f"]) == {"sessions/e": cid(2), "sessions/f": cid(3)}
        await backend.update_refs([RefUpdate("sessions/e", cid(4), cid(2))], message="after")
        assert await backend.get_ref("sessions/e") == cid(4)

    async def test_quarantine_moves_objects_out(self, backend: Backend) -> None:
        items = [obj(f"q{i}") for i in range(4)]
        await backend.put_objects(items)
        assert await backend.quarantine_objects([items[0][0], items[1][0], obj("never")[0]]) == 2
        assert await backend.has_objects([oid for oid, _ in items]) == {items[2][0], items[3][0]}
        got = await backend.get_objects([items[3][0]])
        assert bytes(got[items[3][0]]) == items[3][1]

    async def test_commits_wait_for_gc(self, backend: Backend) -> None:
        async with backend.gc_exclusive():
            pass
        assert await backend.commit([obj("after gc")], [RefUpdate("sessions/g", cid(1), None)]) == 1

    async def test_saves_proceed_under_gc_shared(self, backend: Backend) -> None:
        item = obj("under gc_shared")
        async with backend.gc_shared():
            assert await backend.has_objects([item[0]]) == set()
            assert await backend.commit([item], [RefUpdate("sessions/gs", item[0], None)]) == 1
        async with backend.gc_exclusive():
            pass
        assert await backend.get_ref("sessions/gs") == item[0]

    async def test_check_storage_finds_nothing_on_a_healthy_store(self, backend: Backend) -> None:
        await backend.commit([obj("healthy")], [RefUpdate("sessions/h", cid(1), None)])
        assert await backend.check_storage() == []

    async def test_now_ns_is_the_clock_of_object_times(self, backend: Backend) -> None:
        before = await backend.now_ns()
        await backend.put_objects([obj("clock")])
        after = await backend.now_ns()
        (info,) = [i async for i in backend.iter_objects() if i.id == obj("clock")[0]]
        slack = 5_000_000_000  # a backend may stamp in coarser units than ns
        assert before - slack <= info.time_ns <= after + slack


class PersistentBackendConformance(BackendConformance):
    """More behaviour for backends whose data outlives the backend object."""

    async def reopen(self, backend: Backend, **options: float) -> Backend:  # pragma: no cover - overridden
        raise NotImplementedError

    async def test_saves_wait_while_gc_deletes(self, backend: Backend) -> None:
        writer = await self.reopen(backend)
        await writer.open()
        try:
            async with backend.gc_exclusive():
                save = asyncio.create_task(writer.commit([obj("x")], [RefUpdate("sessions/w", cid(1), None)]))
                await asyncio.sleep(0.3)
                assert not save.done()
                assert await backend.delete_objects([obj("x")[0]]) == 0  # gc can still work meanwhile
            assert await asyncio.wait_for(save, 10) == 1
            assert await backend.get_ref("sessions/w") == cid(1)
            assert await backend.has_objects([obj("x")[0]]) == {obj("x")[0]}
        finally:
            await writer.close()

    async def test_ref_moves_alone_do_not_wait_for_gc(self, backend: Backend) -> None:
        writer = await self.reopen(backend)
        await writer.open()
        try:
            async with backend.gc_exclusive():  # a checkpoint is a ref move: gc cannot delete what it names
                await asyncio.wait_for(writer.update_refs([RefUpdate("checkpoints/c", cid(2), None)]), 5)
            assert await backend.get_ref("checkpoints/c") == cid(2)
        finally:
            await writer.close()

    async def test_a_save_gives_up_waiting_for_gc_clearly(self, backend: Backend) -> None:
        writer = await self.reopen(backend, lock_timeout=0.3)
        await writer.open()
        try:
            async with backend.gc_exclusive():
                with pytest.raises(StoreError, match=r"timed out .*waiting for"):
                    await writer.commit([obj("late")], [RefUpdate("sessions/l", cid(1), None)])
            assert await writer.get_ref("sessions/l") is None
            assert await writer.has_objects([obj("late")[0]]) == set()
            assert await writer.commit([obj("late")], [RefUpdate("sessions/l", cid(1), None)]) == 1
        finally:
            await writer.close()

    async def test_reopen_keeps_everything(self, backend: Backend) -> None:
        items = [obj(f"p{i}") for i in range(30)]
        await backend.commit(items, [RefUpdate("sessions/p", items[0][0], None)], message="persist")
        other = await self.reopen(backend)
        await other.open()
        try:
            got = await other.get_objects([oid for oid, _ in items])
            assert {k: bytes(v) for k, v in got.items()} == dict(items)
            assert await other.get_ref("sessions/p") == items[0][0]
            assert [e.message for e in await other.reflog("sessions/p")] == ["persist"]
        finally:
            await other.close()

    async def test_second_instance_sees_writes(self, backend: Backend) -> None:
        other = await self.reopen(backend)
        await other.open()
        try:
            items = [obj("shared-1"), obj("shared-2")]
            await backend.commit(items, [RefUpdate("sessions/s", items[1][0], None)])
            assert await other.get_ref("sessions/s") == items[1][0]
            assert await other.has_objects([oid for oid, _ in items]) == {oid for oid, _ in items}
            got = await other.get_objects([items[0][0]])
            assert bytes(got[items[0][0]]) == items[0][1]
            await other.update_refs([RefUpdate("sessions/s", items[0][0], items[1][0])])
            assert await backend.get_ref("sessions/s") == items[0][0]
        finally:
            await other.close()

    async def test_gc_waits_for_shared_holders_in_other_processes(self, backend: Backend) -> None:
        other = await self.reopen(backend)
        await other.open()
        try:
            entered = asyncio.Event()

            async def collect() -> None:
                async with backend.gc_exclusive():
                    entered.set()

            async with other.gc_shared():
                gc = asyncio.create_task(collect())
                await asyncio.sleep(0.3)
                assert not entered.is_set()  # gc waits while an import holds the shared side
            await asyncio.wait_for(gc, 10)
            assert entered.is_set()

            joined = asyncio.Event()

            async def join() -> None:
                async with other.gc_shared():
                    joined.set()

            async with backend.gc_exclusive():
                importer = asyncio.create_task(join())
                await asyncio.sleep(0.3)
                assert not joined.is_set()  # and an import waits while gc deletes
            await asyncio.wait_for(importer, 10)
        finally:
            await other.close()
