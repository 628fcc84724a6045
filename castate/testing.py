"""The blob backend conformance suite: the promises of ``castate.backends.blob``, as tests.

Any blob backend, castate's or a third party's, shows it keeps the contract by subclassing
one of these classes in a test module (in the spirit of zarr-python's ``StoreTests``)::

    from castate.testing import PersistentBlobBackendTests

    class TestMyBackend(PersistentBlobBackendTests):
        @pytest.fixture(autouse=True)
        def _where(self, tmp_path: Path) -> None:
            self.path = tmp_path / "store.db"  # make_backend takes no fixtures: keep them on self

        async def make_backend(self) -> BlobBackend:
            return MyBackend(self.path)  # fresh, empty, not opened

        async def reopen(self, backend: BlobBackend) -> BlobBackend:
            return MyBackend(self.path)  # a new object over the same storage, not opened

The class names lack pytest's ``Test`` prefix so only the subclasses are collected. The
tests are coroutines and ``backend`` is an async fixture, so the suite needs pytest-asyncio
in auto mode (``asyncio_mode = "auto"``). This is the only castate module that imports
pytest; nothing else in castate imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator

import pytest

from castate.backends.base import ANY, MAX_REF_NAME, RefUpdate
from castate.backends.blob import MAX_BLOB_NAME, BlobBackend, BlobInfo, check_blob_name
from castate.errors import ConflictError, InvalidKeyError, NotFoundError

__all__ = ["BlobBackendTests", "PersistentBlobBackendTests"]

# A backend may stamp blobs and reflog entries in coarser units than ns (Redis: ms), and a
# server's clock is read a round trip away: comparisons of its stamps with now_ns() allow this.
CLOCK_SLACK_NS = 5_000_000_000

# Names check_blob_name refuses: they would escape a directory, collide once case-folded,
# or not be names the pack store makes at all.
BAD_BLOB_NAMES = [
    "",
    "../x",
    "a/../b",
    "/a",
    "a/",
    "a//b",
    "A",
    "packs/ABC",
    ".hidden",
    "a b",
    "a\x00b",
    "packs/é",
    "a" * 300,
    "a" * (MAX_BLOB_NAME + 1),
]

BAD_REF_NAMES = ["", "r/" + "a" * (MAX_REF_NAME - 1), "r/é", "r/a\nb", "r/\x00", "r/\t"]

# Every printable ASCII character: SQL quotes and LIKE wildcards, glob characters, backslashes.
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))


def value(n: int) -> bytes:
    """A 32-byte ref target, shaped like a commit id."""
    return hashlib.sha256(f"commit-{n}".encode()).digest()


def payload(seed: int, size: int = 100) -> bytes:
    """Deterministic, incompressible bytes."""
    return random.Random(seed).randbytes(size)


def blob(data: bytes, prefix: str = "packs/") -> tuple[str, bytes]:
    """A (name, bytes) item named by its content's hash, as the pack store names packs."""
    return prefix + hashlib.sha256(data).hexdigest(), data


async def clock_passes(backend: BlobBackend, t: int) -> None:
    """Wait until the backend's clock reads later than ``t`` (stamps can be coarse)."""
    while await backend.now_ns() <= t:
        await asyncio.sleep(0.001)


async def tick(backend: BlobBackend) -> None:
    """Let the backend's clock move on, so that the next change is strictly newer than the last."""
    await clock_passes(backend, await backend.now_ns())


class BlobBackendTests:
    """Behaviour every ``BlobBackend`` must have. Subclasses define ``make_backend``."""

    async def make_backend(self) -> BlobBackend:  # pragma: no cover - overridden
        """A fresh, empty backend, not yet opened."""
        raise NotImplementedError

    @pytest.fixture
    async def backend(self) -> AsyncIterator[BlobBackend]:
        b = await self.make_backend()
        await b.open()
        try:
            yield b
        finally:
            await b.close()

    # -- blobs: writing and reading -------------------------------------------------------------

    async def test_put_get_round_trip(self, backend: BlobBackend) -> None:
        items = [blob(payload(i, 1 + 37 * i)) for i in range(50)]
        assert await backend.put_blobs(items) == 50
        got = await backend.get_blobs([name for name, _ in items])
        assert got == dict(items)
        assert all(isinstance(data, bytes) for data in got.values())
        some = [items[3][0], items[17][0]]
        assert await backend.get_blobs(some) == {n: dict(items)[n] for n in some}

    async def test_empty_blob(self, backend: BlobBackend) -> None:
        assert await backend.put_blobs([("packs/empty", b"")]) == 1
        assert await backend.get_blobs(["packs/empty"]) == {"packs/empty": b""}
        assert [(i.name, i.size) for i in await backend.list_blobs()] == [("packs/empty", 0)]
        # an empty blob exists: its ranges are empty bytes, not None
        assert await backend.get_ranges([("packs/empty", 0, 10), ("packs/empty", 0, 0)]) == [b"", b""]
        assert await backend.put_blobs([("packs/empty", b"not empty")]) == 0
        assert await backend.get_blobs(["packs/empty"]) == {"packs/empty": b""}

    async def test_large_blob(self, backend: BlobBackend) -> None:
        data = os.urandom(5 << 20)
        name, _ = blob(data)
        assert await backend.put_blobs([(name, data)]) == 1
        assert await backend.get_blobs([name]) == {name: data}
        assert [(i.name, i.size) for i in await backend.list_blobs()] == [(name, 5 << 20)]
        mib = 1 << 20
        ranges = [(name, mib - 7, 14), (name, (5 << 20) - 10, 100), (name, 2 * mib, mib), (name, 0, 5 << 20)]
        assert await backend.get_ranges(ranges) == [data[o : o + n] for _, o, n in ranges]

    async def test_missing_blobs_are_absent(self, backend: BlobBackend) -> None:
        item = blob(b"present")
        await backend.put_blobs([item])
        missing = blob(b"never stored")[0]
        assert await backend.get_blobs([item[0], missing]) == dict([item])
        assert await backend.get_blobs([missing]) == {}

    async def test_empty_batches(self, backend: BlobBackend) -> None:
        assert await backend.put_blobs([]) == 0
        assert await backend.get_blobs([]) == {}
        assert await backend.get_ranges([]) == []
        assert await backend.delete_blobs([]) == 0
        assert await backend.list_blobs() == []
        assert await backend.commit((), ()) == 0
        assert await backend.get_refs([]) == {}
        assert await backend.reflog() == []

    # -- blobs: create-only ---------------------------------------------------------------------

    async def test_put_is_create_only(self, backend: BlobBackend) -> None:
        a, b = ("packs/a", b"first bytes"), ("packs/b", b"b")
        assert await backend.put_blobs([a]) == 1
        (before,) = await backend.list_blobs()
        await clock_passes(backend, before.time_ns)
        # a second write of a name leaves the blob as it is: its bytes, size and write time
        assert await backend.put_blobs([("packs/a", b"other, longer bytes"), b]) == 1
        assert await backend.get_blobs(["packs/a", "packs/b"]) == {"packs/a": b"first bytes", "packs/b": b"b"}
        assert (await backend.list_blobs("packs/a")) == [before]
        assert await backend.put_blobs([a, b]) == 0
        assert await backend.put_blobs([b, ("packs/c", b"c"), a]) == 1
        assert [i.name for i in await backend.list_blobs()] == ["packs/a", "packs/b", "packs/c"]

    async def test_commit_blobs_are_create_only(self, backend: BlobBackend) -> None:
        await backend.put_blobs([("packs/a", b"first")])
        n = await backend.commit([("packs/a", b"second"), ("packs/b", b"b")], [RefUpdate("r", value(1), None)])
        assert n == 1
        assert await backend.get_blobs(["packs/a", "packs/b"]) == {"packs/a": b"first", "packs/b": b"b"}

    async def test_duplicates_within_one_batch_count_once(self, backend: BlobBackend) -> None:
        item = blob(b"dup")
        assert await backend.put_blobs([item, item, item]) == 1
        assert await backend.get_blobs([item[0]]) == dict([item])
        assert await backend.commit([blob(b"dup2"), blob(b"dup2")], ()) == 1
        # one name with two contents in one batch: one of them is stored, counted once
        assert await backend.put_blobs([("packs/x", b"one"), ("packs/x", b"two")]) == 1
        assert (await backend.get_blobs(["packs/x"]))["packs/x"] in (b"one", b"two")
        assert len(await backend.list_blobs()) == 3

    async def test_deleted_blob_can_be_written_again(self, backend: BlobBackend) -> None:
        await backend.put_blobs([("packs/a", b"old")])
        assert await backend.delete_blobs(["packs/a"]) == 1
        assert await backend.put_blobs([("packs/a", b"new")]) == 1
        assert await backend.get_blobs(["packs/a"]) == {"packs/a": b"new"}

    # -- blobs: ranges --------------------------------------------------------------------------

    async def test_get_ranges(self, backend: BlobBackend) -> None:
        data = bytes(range(256)) * 4
        await backend.put_blobs([("packs/r", data)])
        got = await backend.get_ranges(
            [
                ("packs/r", 0, 10),  # inside
                ("packs/r", 100, 50),
                ("packs/r", 1000, 100),  # clipped at the end
                ("packs/r", 0, 10**9),
                ("packs/r", 0, 1024),
                ("packs/r", 1023, 1),
                ("packs/r", 1024, 5),  # at the end
                ("packs/r", 5000, 5),  # past the end
                ("packs/r", 10, 0),  # nothing asked
                ("packs/missing", 0, 10),
                ("packs/missing", 5000, 0),
            ]
        )
        assert got == [
            data[:10],
            data[100:150],
            data[1000:],
            data,
            data,
            data[1023:],
            b"",
            b"",
            b"",
            None,
            None,
        ]
        assert all(isinstance(part, bytes) for part in got[:9])

    async def test_many_ranges_in_one_call(self, backend: BlobBackend) -> None:
        items = [blob(payload(i, 500 + 300 * i)) for i in range(5)]
        await backend.put_blobs(items)
        rng = random.Random(7)
        ranges: list[tuple[str, int, int]] = []
        for _ in range(300):
            name, data = rng.choice(items)
            ranges.append((name, rng.randrange(len(data) + 20), rng.randrange(200)))
        ranges += [("packs/absent", 0, 5), *ranges[:10]]  # a missing blob, and ranges asked twice
        expect = [dict(items)[n][o : o + k] if n in dict(items) else None for n, o, k in ranges]
        assert await backend.get_ranges(ranges) == expect

    async def test_one_blob_several_times_in_one_call(self, backend: BlobBackend) -> None:
        await backend.put_blobs([("packs/s", b"0123456789")])
        ranges = [("packs/s", 0, 4), ("packs/s", 0, 4), ("packs/s", 4, 4), ("packs/s", 8, 4), ("packs/s", 2, 3)]
        assert await backend.get_ranges(ranges) == [b"0123", b"0123", b"4567", b"89", b"234"]

    # -- blobs: listing and deleting ------------------------------------------------------------

    async def test_list_blobs_by_prefix_in_name_order(self, backend: BlobBackend) -> None:
        # punctuation sorts before digits and letters: a collation other than code-point order
        # shows; "_" and "." are wildcards to SQL LIKE and regular expressions
        names = [
            "a-b",
            "a.b",
            "a/b",
            "a0",
            "a_b",
            "ab",
            "b",
            "packs-old/1",
            "packs/01",
            "packs/0a",
            "packs/10",
            "packsx/1",
            "quarantine/packs/01",
            "x_1",
            "xa1",
        ]
        shuffled = names[:]
        random.Random(3).shuffle(shuffled)
        sizes = {name: 1 + i for i, name in enumerate(names)}
        await backend.put_blobs([(name, payload(i, sizes[name])) for i, name in enumerate(shuffled[:8])])
        await backend.put_blobs([(name, payload(i, sizes[name])) for i, name in enumerate(shuffled[8:])])
        infos = await backend.list_blobs()
        assert [i.name for i in infos] == sorted(names)
        assert all(isinstance(i, BlobInfo) for i in infos)
        assert {i.name: i.size for i in infos} == sizes
        assert all(i.time_ns > 0 for i in infos)

        async def listed(prefix: str) -> list[str]:
            return [i.name for i in await backend.list_blobs(prefix)]

        assert await listed("packs/") == ["packs/01", "packs/0a", "packs/10"]
        assert await listed("packs/0") == ["packs/01", "packs/0a"]
        assert await listed("packs") == ["packs-old/1", "packs/01", "packs/0a", "packs/10", "packsx/1"]
        assert await listed("a") == ["a-b", "a.b", "a/b", "a0", "a_b", "ab"]
        assert await listed("a_") == ["a_b"]
        assert await listed("x_") == ["x_1"]
        assert await listed("a.") == ["a.b"]
        assert await listed("quarantine/") == ["quarantine/packs/01"]
        assert await listed("b") == ["b"]
        assert await listed("zzz") == []
        assert await listed("") == sorted(names)

    async def test_blob_times_are_on_the_now_ns_clock(self, backend: BlobBackend) -> None:
        before = await backend.now_ns()
        await backend.put_blobs([("packs/t", b"clock")])
        await backend.commit([("packs/u", b"clock")], ())
        after = await backend.now_ns()
        for info in await backend.list_blobs():
            assert before - CLOCK_SLACK_NS <= info.time_ns <= after + CLOCK_SLACK_NS

    async def test_delete_blobs(self, backend: BlobBackend) -> None:
        items = [blob(payload(i)) for i in range(10)]
        await backend.put_blobs(items)
        doomed, kept = items[:4], items[4:]
        assert await backend.delete_blobs([n for n, _ in doomed]) == 4
        assert await backend.get_blobs([n for n, _ in items]) == dict(kept)
        assert [(i.name, i.size) for i in await backend.list_blobs()] == sorted((n, len(d)) for n, d in kept)
        assert await backend.get_ranges([(doomed[0][0], 0, 10)]) == [None]
        assert await backend.delete_blobs([n for n, _ in doomed]) == 0  # idempotent
        assert await backend.delete_blobs(["packs/never", kept[0][0], kept[0][0]]) == 1  # counted once
        assert await backend.get_blobs([n for n, _ in items]) == dict(kept[1:])

    async def test_bad_blob_names_are_refused(self, backend: BlobBackend) -> None:
        for name in BAD_BLOB_NAMES:
            with pytest.raises(ValueError, match="blob name"):
                check_blob_name(name)
            with pytest.raises(ValueError, match="blob name"):
                await backend.put_blobs([(name, b"x")])
            with pytest.raises(ValueError, match="blob name"):
                await backend.commit([(name, b"x")], [RefUpdate("r", value(1), None)])
        assert await backend.list_blobs() == []
        assert await backend.list_refs() == {}
        assert await backend.reflog() == []

    async def test_good_blob_names_are_accepted(self, backend: BlobBackend) -> None:
        names = [
            "packs/" + "0123456789abcdef" * 4,
            "quarantine/packs/" + "f" * 64,
            "index/0.1-x_y",
            "a",
            "9",
            "a" * MAX_BLOB_NAME,
            "/".join(["a"] * (MAX_BLOB_NAME // 2)),
        ]
        for name in names:
            check_blob_name(name)
        assert await backend.put_blobs([(name, name.encode()) for name in names]) == len(names)
        assert await backend.get_blobs(names) == {name: name.encode() for name in names}
        assert [i.name for i in await backend.list_blobs()] == sorted(names)

    # -- refs ---------------------------------------------------------------------------------

    async def test_ref_create_move_delete_with_reflog(self, backend: BlobBackend) -> None:
        r = "sessions/a"
        assert await backend.get_ref(r) is None
        await backend.update_refs([RefUpdate(r, value(1), None)], message="create")
        assert await backend.get_ref(r) == value(1)
        assert await backend.get_refs([r, "sessions/b"]) == {r: value(1)}
        await backend.update_refs([RefUpdate(r, value(2), value(1))], message="move")
        assert await backend.get_ref(r) == value(2)
        await backend.update_refs([RefUpdate(r, None, value(2))], message="delete")
        assert await backend.get_ref(r) is None
        assert await backend.list_refs() == {}
        log = await backend.reflog(r)
        assert [(e.name, e.old, e.new, e.message) for e in log] == [
            (r, None, value(1), "create"),
            (r, value(1), value(2), "move"),
            (r, value(2), None, "delete"),
        ]
        assert all(e.time_ns > 0 for e in log)
        assert [e.time_ns for e in log] == sorted(e.time_ns for e in log)
        assert await backend.reflog() == log

    async def test_reflog_of_one_ref_and_of_all(self, backend: BlobBackend) -> None:
        # the clock ticks between the calls: changes with equal times may come in any order
        await backend.update_refs([RefUpdate("sessions/a", value(1), None)], message="first")
        await tick(backend)
        await backend.update_refs([RefUpdate("sessions/b", value(3), None)], message="other")
        await tick(backend)
        await backend.update_refs([RefUpdate("sessions/a", value(2), value(1))], message="second")
        await tick(backend)
        await backend.update_refs(
            [RefUpdate("sessions/c", value(4), None), RefUpdate("sessions/d", value(5), None)], message="pair"
        )
        log_a = await backend.reflog("sessions/a")
        assert [(e.old, e.new, e.message) for e in log_a] == [(None, value(1), "first"), (value(1), value(2), "second")]
        everything = await backend.reflog()
        assert [e.message for e in everything[:3]] == ["first", "other", "second"]
        # the order among the changes of one call is not promised
        assert sorted((e.name, e.new, e.message) for e in everything[3:]) == [
            ("sessions/c", value(4), "pair"),
            ("sessions/d", value(5), "pair"),
        ]
        assert [e.time_ns for e in everything] == sorted(e.time_ns for e in everything)
        assert await backend.reflog("sessions/none") == []

    async def test_stale_expectation_conflicts_and_changes_nothing(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("r/one", value(1), None), RefUpdate("r/two", value(2), None)])
        refs, log = await backend.list_refs(), await backend.reflog()
        cases: list[tuple[list[RefUpdate], str]] = [
            ([RefUpdate("r/one", value(3), value(1)), RefUpdate("r/two", value(4), value(9))], "r/two"),
            ([RefUpdate("r/two", value(4), value(9)), RefUpdate("r/one", value(3), value(1))], "r/two"),
            ([RefUpdate("r/new", value(5), None), RefUpdate("r/one", value(3), None)], "r/one"),
            ([RefUpdate("r/three", value(3), value(1))], "r/three"),
            ([RefUpdate("r/two", None, value(1))], "r/two"),
            ([RefUpdate("r/one", value(1), value(2))], "r/one"),
        ]
        for updates, culprit in cases:
            with pytest.raises(ConflictError) as caught:
                await backend.update_refs(updates, message="stale")
            assert caught.value.ref == culprit
            with pytest.raises(ConflictError) as caught:
                await backend.commit([blob(b"with a commit")], updates, message="stale")
            assert caught.value.ref == culprit
            assert await backend.list_refs() == refs
            assert await backend.reflog() == log

    async def test_any_expectation(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("r/x", value(1), ANY)], message="a")
        await backend.update_refs([RefUpdate("r/x", value(2), ANY)], message="b")
        assert await backend.get_ref("r/x") == value(2)
        await backend.update_refs([RefUpdate("r/x", value(3))], message="c")  # ANY is the default
        assert await backend.get_ref("r/x") == value(3)
        await backend.update_refs([RefUpdate("r/x", None, ANY)], message="d")
        assert await backend.get_ref("r/x") is None
        log = await backend.reflog("r/x")
        assert [(e.old, e.new, e.message) for e in log] == [
            (None, value(1), "a"),
            (value(1), value(2), "b"),
            (value(2), value(3), "c"),
            (value(3), None, "d"),
        ]

    async def test_several_updates_of_one_name_apply_in_order(self, backend: BlobBackend) -> None:
        await backend.update_refs(
            [
                RefUpdate("r/a", value(1), None),
                RefUpdate("r/b", value(9), None),
                RefUpdate("r/a", value(2), value(1)),
                RefUpdate("r/a", value(3), value(2)),
            ],
            message="chain",
        )
        assert await backend.list_refs() == {"r/a": value(3), "r/b": value(9)}
        assert [(e.old, e.new) for e in await backend.reflog("r/a")] == [
            (None, value(1)),
            (value(1), value(2)),
            (value(2), value(3)),
        ]
        await backend.commit((), [RefUpdate("r/c", value(1), None), RefUpdate("r/c", None, value(1))])
        assert await backend.get_ref("r/c") is None
        assert [(e.old, e.new) for e in await backend.reflog("r/c")] == [(None, value(1)), (value(1), None)]
        # each update sees the one before it: the second expects the ref absent, and it is not
        with pytest.raises(ConflictError) as caught:
            await backend.commit((), [RefUpdate("r/d", value(1), None), RefUpdate("r/d", value(2), None)])
        assert caught.value.ref == "r/d"
        assert await backend.get_ref("r/d") is None
        assert await backend.reflog("r/d") == []

    async def test_list_refs_by_prefix(self, backend: BlobBackend) -> None:
        # ref names may hold any printable ASCII, SQL LIKE and glob wildcards included
        refs = {
            "s/a": value(1),
            "s/a_b": value(2),
            "s/ab": value(3),
            "s/a%": value(4),
            "s/a*": value(5),
            "s/a?": value(6),
            "s/a[1]": value(7),
            "s/a\\x": value(8),
            "s/A": value(9),
            "s/ a": value(10),
            "s/a'\";--": value(11),
            "t/a": value(12),
            "sessions/a": value(13),
        }
        await backend.update_refs([RefUpdate(n, v, None) for n, v in refs.items()])
        assert await backend.list_refs() == refs
        assert await backend.list_refs("") == refs
        assert await backend.list_refs("s/") == {n: v for n, v in refs.items() if n.startswith("s/")}
        for prefix in ("s/a_", "s/a%", "s/a*", "s/a?", "s/a[", "s/a\\", "s/A", "s/ ", "s/a'", "t/", "sessions/"):
            assert await backend.list_refs(prefix) == {n: v for n, v in refs.items() if n.startswith(prefix)}
        assert await backend.list_refs("s/a") == {n: v for n, v in refs.items() if n.startswith("s/a")}
        assert await backend.list_refs("nothing/") == {}
        assert await backend.get_refs(list(refs)) == refs

    async def test_the_longest_ref_names(self, backend: BlobBackend) -> None:
        name = ("r/" + PRINTABLE * (MAX_REF_NAME // len(PRINTABLE) + 1))[:MAX_REF_NAME]
        twin = name[:-1] + "~" if name[-1] != "~" else name[:-1] + "!"
        assert len(name) == len(twin) == MAX_REF_NAME
        await backend.update_refs([RefUpdate(name, value(1), None)], message="longest")
        assert await backend.get_ref(name) == value(1)
        assert await backend.list_refs(name[:200]) == {name: value(1)}
        assert await backend.copy_ref(name, twin) == value(1)
        assert await backend.list_refs("r/") == {name: value(1), twin: value(1)}
        await backend.update_refs([RefUpdate(name, None, value(1))])
        assert await backend.list_refs() == {twin: value(1)}
        assert [(e.name, e.message) for e in await backend.reflog(name)] == [(name, "longest"), (name, "")]

    async def test_an_incompressible_longest_ref_name(self, backend: BlobBackend) -> None:
        """Works, or is refused with InvalidKeyError changing nothing where an engine's index
        cannot hold it (PostgreSQL's btree entries, docs/backends.md)."""
        rng = random.Random(11)
        name = "r/" + "".join(rng.choice(PRINTABLE) for _ in range(MAX_REF_NAME - 2))
        try:
            await backend.update_refs([RefUpdate(name, value(1), None)], message="incompressible")
        except InvalidKeyError:
            assert await backend.list_refs() == {}
            assert await backend.reflog() == []
        else:
            assert await backend.get_ref(name) == value(1)
            assert await backend.list_refs("r/") == {name: value(1)}
            assert [e.name for e in await backend.reflog(name)] == [name]
        await backend.update_refs([RefUpdate("r/after", value(2), None)])  # and the store goes on
        assert await backend.get_ref("r/after") == value(2)

    async def test_bad_ref_names_are_refused(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("r/ok", value(1), None)])
        for name in BAD_REF_NAMES:
            with pytest.raises(ValueError, match="ref name"):
                await backend.update_refs([RefUpdate(name, value(2), ANY)])
            with pytest.raises(ValueError, match="ref name"):
                await backend.update_refs([RefUpdate("r/ok", value(2), value(1)), RefUpdate(name, value(2), None)])
        assert await backend.list_refs() == {"r/ok": value(1)}
        assert len(await backend.reflog()) == 1

    # -- commit ---------------------------------------------------------------------------------

    async def test_commit_stores_blobs_then_moves_refs(self, backend: BlobBackend) -> None:
        items = [blob(payload(i, 1000)) for i in range(5)]
        written = await backend.commit(items, [RefUpdate("sessions/c", value(1), None)], message="save")
        assert written == 5
        assert await backend.get_blobs([n for n, _ in items]) == dict(items)
        assert await backend.get_ref("sessions/c") == value(1)
        assert [(e.old, e.new, e.message) for e in await backend.reflog("sessions/c")] == [(None, value(1), "save")]
        # new blobs are counted, not the ones already there
        more = [*items[:3], blob(b"new 1"), blob(b"new 2")]
        assert await backend.commit(more, [RefUpdate("sessions/c", value(2), value(1))]) == 2
        assert await backend.get_ref("sessions/c") == value(2)
        assert len(await backend.list_blobs()) == 7

    async def test_commit_of_blobs_alone(self, backend: BlobBackend) -> None:
        assert await backend.commit([blob(b"alone")], (), message="nothing moves") == 1
        assert await backend.get_blobs([blob(b"alone")[0]]) == dict([blob(b"alone")])
        assert await backend.reflog() == []
        assert await backend.list_refs() == {}

    async def test_failed_commit_moves_no_ref(self, backend: BlobBackend) -> None:
        await backend.commit([blob(b"c1")], [RefUpdate("sessions/c", value(1), None)])
        log = await backend.reflog()
        with pytest.raises(ConflictError) as caught:
            await backend.commit(
                [blob(b"c2")],
                [RefUpdate("sessions/d", value(3), None), RefUpdate("sessions/c", value(2), None)],
                message="lost",
            )
        assert caught.value.ref == "sessions/c"
        assert await backend.list_refs() == {"sessions/c": value(1)}
        assert await backend.reflog() == log
        # the blobs of a failed commit may or may not be stored; a retry counts what was new
        assert await backend.commit([blob(b"c2")], [RefUpdate("sessions/c", value(2), value(1))]) in (0, 1)
        assert await backend.get_blobs([blob(b"c2")[0]]) == dict([blob(b"c2")])

    async def test_checks(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("sessions/a", value(1), None)], message="setup")
        # equal: the updates apply; the check ref is compared only
        await backend.commit(
            [blob(b"k1")], [RefUpdate("checkpoints/x", value(2), None)], message="ok", checks={"sessions/a": value(1)}
        )
        assert await backend.get_ref("checkpoints/x") == value(2)
        # absent as expected: passes, and the ref stays absent
        await backend.commit(
            (), [RefUpdate("checkpoints/y", value(3), None)], checks={"sessions/missing": None, "sessions/a": value(1)}
        )
        assert await backend.get_ref("checkpoints/y") == value(3)
        assert await backend.get_ref("sessions/missing") is None
        assert await backend.commit((), [RefUpdate("checkpoints/z", value(4), None)], checks={}) == 0
        refs, log = await backend.list_refs(), await backend.reflog()
        failing: list[tuple[dict[str, bytes | None], str]] = [
            ({"sessions/a": value(9)}, "sessions/a"),  # another value
            ({"sessions/a": None}, "sessions/a"),  # present, expected absent
            ({"sessions/missing": value(1)}, "sessions/missing"),  # absent, expected present
            ({"checkpoints/x": value(2), "sessions/a": value(5)}, "sessions/a"),  # one of several
        ]
        for checks, culprit in failing:
            with pytest.raises(ConflictError) as caught:
                await backend.commit(
                    [blob(b"k2")], [RefUpdate("checkpoints/w", value(6), None)], message="no", checks=checks
                )
            assert caught.value.ref == culprit
            assert await backend.list_refs() == refs
            assert await backend.reflog() == log
        assert await backend.reflog("sessions/a") == [e for e in log if e.message == "setup"]
        assert await backend.reflog("sessions/missing") == []
        assert "sessions/missing" not in await backend.list_refs()

    async def test_update_refs_is_a_commit_without_blobs(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("r/u", value(1), None), RefUpdate("r/v", value(2), None)], message="u")
        assert await backend.list_refs("r/") == {"r/u": value(1), "r/v": value(2)}
        assert sorted((e.name, e.message) for e in await backend.reflog()) == [("r/u", "u"), ("r/v", "u")]
        assert await backend.list_blobs() == []

    # -- copy_ref -------------------------------------------------------------------------------

    async def test_copy_ref(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("sessions/a", value(7), None)])
        source_log = await backend.reflog("sessions/a")
        assert await backend.copy_ref("sessions/a", "checkpoints/a/x", message="copy") == value(7)
        assert await backend.get_refs(["sessions/a", "checkpoints/a/x"]) == {
            "sessions/a": value(7),
            "checkpoints/a/x": value(7),
        }
        assert [(e.old, e.new, e.message) for e in await backend.reflog("checkpoints/a/x")] == [
            (None, value(7), "copy")
        ]
        assert await backend.reflog("sessions/a") == source_log
        # expected=None (the default): the target must be absent
        with pytest.raises(ConflictError) as caught:
            await backend.copy_ref("sessions/a", "checkpoints/a/x")
        assert caught.value.ref == "checkpoints/a/x"
        await backend.update_refs([RefUpdate("sessions/a", value(8), value(7))])
        with pytest.raises(ConflictError) as caught:
            await backend.copy_ref("sessions/a", "checkpoints/a/x", expected=value(1))
        assert caught.value.ref == "checkpoints/a/x"
        assert await backend.get_ref("checkpoints/a/x") == value(7)
        assert await backend.copy_ref("sessions/a", "checkpoints/a/x", expected=value(7)) == value(8)
        await backend.update_refs([RefUpdate("sessions/a", value(9), value(8))])
        assert await backend.copy_ref("sessions/a", "checkpoints/a/x", expected=ANY) == value(9)
        assert await backend.get_ref("checkpoints/a/x") == value(9)
        assert len(await backend.reflog("checkpoints/a/x")) == 3

    async def test_copy_ref_of_a_missing_source(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("checkpoints/b/x", value(1), None)])
        log = await backend.reflog()
        with pytest.raises(NotFoundError):
            await backend.copy_ref("sessions/missing", "checkpoints/missing/x")
        with pytest.raises(NotFoundError):
            await backend.copy_ref("sessions/missing", "checkpoints/b/x", expected=ANY)
        assert await backend.list_refs() == {"checkpoints/b/x": value(1)}
        assert await backend.reflog() == log

    # -- reflog expiry --------------------------------------------------------------------------

    async def test_expire_reflog_keeps_refs(self, backend: BlobBackend) -> None:
        await backend.update_refs([RefUpdate("sessions/e", value(1), None)], message="old")
        (first,) = await backend.reflog()
        await clock_passes(backend, first.time_ns)
        await backend.update_refs([RefUpdate("sessions/e", value(2), value(1))], message="new")
        await tick(backend)
        await backend.update_refs([RefUpdate("sessions/f", value(3), None)], message="newer")
        assert await backend.expire_reflog(first.time_ns) == 0  # older than: not at
        assert await backend.expire_reflog(first.time_ns + 1) == 1
        assert [e.message for e in await backend.reflog()] == ["new", "newer"]
        assert await backend.reflog("sessions/e") == [e for e in await backend.reflog() if e.message == "new"]
        assert await backend.list_refs() == {"sessions/e": value(2), "sessions/f": value(3)}
        await tick(backend)
        await backend.update_refs([RefUpdate("sessions/e", value(4), value(2))], message="after")
        assert await backend.get_ref("sessions/e") == value(4)
        assert [e.message for e in await backend.reflog()] == ["new", "newer", "after"]
        everything = await backend.now_ns() + 60 * 1_000_000_000
        assert await backend.expire_reflog(everything) == 3
        assert await backend.reflog() == []
        assert await backend.expire_reflog(everything) == 0
        assert await backend.list_refs() == {"sessions/e": value(4), "sessions/f": value(3)}

    # -- concurrency on one backend object ------------------------------------------------------

    async def test_concurrent_creators_of_one_ref(self, backend: BlobBackend) -> None:
        async def create(i: int) -> int:
            data = payload(1000 + i)
            return await backend.commit([blob(data)], [RefUpdate("sessions/race", value(i), None)], message=str(i))

        results = await asyncio.gather(*(create(i) for i in range(20)), return_exceptions=True)
        winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
        assert len(winners) == 1, results
        losers = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, ConflictError) and r.ref == "sessions/race" for r in losers), losers
        (winner,) = winners
        assert results[winner] == 1
        assert await backend.get_ref("sessions/race") == value(winner)
        assert [(e.old, e.new, e.message) for e in await backend.reflog("sessions/race")] == [
            (None, value(winner), str(winner))
        ]
        assert await backend.get_blobs([blob(payload(1000 + winner))[0]]) == dict([blob(payload(1000 + winner))])

    async def test_concurrent_compare_and_swap_loses_no_update(self, backend: BlobBackend) -> None:
        def counter(n: int) -> bytes:
            return n.to_bytes(32, "big")

        async def increment(times: int) -> None:
            for _ in range(times):
                for _attempt in range(1000):
                    old = await backend.get_ref("r/counter")
                    new = counter(0 if old is None else int.from_bytes(old, "big") + 1)
                    try:
                        await backend.update_refs([RefUpdate("r/counter", new, old)])
                    except ConflictError:
                        continue
                    break
                else:  # pragma: no cover - a backend that never lets a writer through
                    raise AssertionError("a compare-and-swap never succeeded")

        await asyncio.gather(*(increment(3) for _ in range(10)))
        assert await backend.get_ref("r/counter") == counter(29)
        log = await backend.reflog("r/counter")
        assert [e.new for e in log] == [counter(n) for n in range(30)]
        assert [e.old for e in log] == [None] + [counter(n) for n in range(29)]

    async def test_concurrent_commits_of_different_refs(self, backend: BlobBackend) -> None:
        async def save(i: int) -> int:
            return await backend.commit([blob(payload(i))], [RefUpdate(f"sessions/{i}", value(i), None)])

        assert sum(await asyncio.gather(*(save(i) for i in range(20)))) == 20
        assert await backend.list_refs("sessions/") == {f"sessions/{i}": value(i) for i in range(20)}
        assert len(await backend.reflog()) == 20
        assert len(await backend.list_blobs()) == 20

    async def test_concurrent_puts_of_one_blob_count_once(self, backend: BlobBackend) -> None:
        item = blob(b"contended")
        counts = await asyncio.gather(*(backend.put_blobs([item]) for _ in range(10)))
        assert sum(counts) == 1
        assert await backend.get_blobs([item[0]]) == dict([item])

    # -- maintenance ----------------------------------------------------------------------------

    async def test_gc_locks_are_async_context_managers(self, backend: BlobBackend) -> None:
        await backend.commit([blob(b"live")], [RefUpdate("sessions/g", value(1), None)])
        await backend.put_blobs([blob(b"garbage")])
        async with backend.gc_exclusive():  # what gc does while it holds the lock
            assert len(await backend.list_blobs()) == 2
            assert await backend.list_refs() == {"sessions/g": value(1)}
            assert await backend.delete_blobs([blob(b"garbage")[0]]) == 1
        # a commit completes once gc let go, and the lock can be taken again
        assert await backend.commit([blob(b"after gc")], [RefUpdate("sessions/g", value(2), value(1))]) == 1
        async with backend.gc_exclusive():
            pass
        async with backend.gc_shared():  # an import's checks and ref moves span several calls
            assert await backend.get_ref("sessions/g") == value(2)
            assert await backend.commit([blob(b"import")], [RefUpdate("sessions/i", value(3), None)]) == 1
        async with backend.gc_shared():
            pass
        async with backend.gc_exclusive():
            assert [i.name for i in await backend.list_blobs()] == sorted(
                blob(d)[0] for d in (b"live", b"after gc", b"import")
            )
        assert await backend.list_refs() == {"sessions/g": value(2), "sessions/i": value(3)}

    async def test_now_ns_is_the_time(self, backend: BlobBackend) -> None:
        assert abs(await backend.now_ns() - time.time_ns()) < 60 * 1_000_000_000

    async def test_stats_count_blobs(self, backend: BlobBackend) -> None:
        empty = await backend.stats()
        assert (empty["blobs"], empty["blob_bytes"]) == (0, 0)
        await backend.put_blobs([blob(payload(i, 10 * i + 5)) for i in range(12)])
        await backend.commit([blob(b"")], [RefUpdate("r/s", value(1), None)], message="s")
        assert await backend.delete_blobs([blob(payload(3, 35))[0]]) == 1
        stats = await backend.stats()
        infos = await backend.list_blobs()
        assert stats["blobs"] == len(infos) == 12
        assert stats["blob_bytes"] == sum(i.size for i in infos) == sum(10 * i + 5 for i in range(12)) - 35
        assert all(isinstance(v, int) and v >= 0 for v in stats.values()), stats
        if "refs" in stats:
            assert stats["refs"] == len(await backend.list_refs())
        if "reflog_entries" in stats:
            assert stats["reflog_entries"] == len(await backend.reflog())

    async def test_reclaim_keeps_what_is_live(self, backend: BlobBackend) -> None:
        items = [blob(payload(i, 20_000)) for i in range(10)]
        await backend.commit(items, [RefUpdate("r/live", value(1), None)])
        await backend.delete_blobs([n for n, _ in items[:7]])
        await backend.reclaim()
        assert await backend.get_blobs([n for n, _ in items]) == dict(items[7:])
        assert await backend.get_ref("r/live") == value(1)
        assert await backend.commit([blob(b"after reclaim")], [RefUpdate("r/live", value(2), value(1))]) == 1

    async def test_a_healthy_store_needs_no_repair(self, backend: BlobBackend) -> None:
        await backend.commit([blob(b"healthy")], [RefUpdate("sessions/h", value(1), None)])
        assert await backend.check_storage() == []
        report = await backend.repair_refs()
        assert not report.damaged
        assert await backend.list_refs() == {"sessions/h": value(1)}
        assert len(await backend.reflog()) == 1

    async def test_a_new_store_has_no_legacy_objects(self, backend: BlobBackend) -> None:
        assert await backend.legacy_objects() == 0
        assert [batch async for batch in backend.iter_legacy_frames()] == []
        await backend.commit([blob(b"v2")], [RefUpdate("sessions/l", value(1), None)])
        assert await backend.legacy_objects() == 0
        await backend.drop_legacy()  # nothing to drop, and nothing else goes with it
        assert await backend.get_blobs([blob(b"v2")[0]]) == dict([blob(b"v2")])
        assert await backend.get_ref("sessions/l") == value(1)

    async def test_location_describes_the_store(self, backend: BlobBackend) -> None:
        assert isinstance(backend.location, str)
        assert backend.location


class PersistentBlobBackendTests(BlobBackendTests):
    """More behaviour for backends whose data outlives the backend object (files, servers)."""

    async def reopen(self, backend: BlobBackend) -> BlobBackend:  # pragma: no cover - overridden
        """A new backend object over ``backend``'s storage, not yet opened."""
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def other(self, backend: BlobBackend) -> AsyncIterator[BlobBackend]:
        """A second open backend object over the same storage: another process, in effect."""
        b = await self.reopen(backend)
        await b.open()
        try:
            yield b
        finally:
            await b.close()

    async def test_close_and_reopen_keeps_everything(self) -> None:
        first = await self.make_backend()
        await first.open()
        try:
            items = [blob(payload(i, 100 * i)) for i in range(30)] + [("packs/empty", b""), blob(os.urandom(1 << 20))]
            await first.commit(items[:20], [RefUpdate("sessions/p", value(1), None)], message="persist")
            await first.put_blobs(items[20:])
            await first.update_refs(
                [RefUpdate("sessions/p", value(2), value(1)), RefUpdate("checkpoints/p/x", value(1), None)],
                message="second",
            )
            await first.update_refs([RefUpdate("sessions/gone", value(3), None)], message="made")
            await first.update_refs([RefUpdate("sessions/gone", None, value(3))], message="deleted")
            blobs, refs, log = await first.list_blobs(), await first.list_refs(), await first.reflog()
        finally:
            await first.close()
        second = await self.reopen(first)
        await second.open()
        try:
            assert await second.get_blobs([n for n, _ in items]) == dict(items)
            assert await second.list_blobs() == blobs  # names, sizes and times
            assert await second.get_ranges([("packs/empty", 0, 1), (items[5][0], 3, 4)]) == [b"", items[5][1][3:7]]
            assert await second.list_refs() == refs == {"sessions/p": value(2), "checkpoints/p/x": value(1)}
            assert await second.reflog() == log
            assert sorted(e.message for e in log) == ["deleted", "made", "persist", "second", "second"]
            assert await second.legacy_objects() == 0
            stats = await second.stats()
            assert (stats["blobs"], stats["blob_bytes"]) == (len(blobs), sum(i.size for i in blobs))
            # and it goes on: create-only and compare-and-swap against what was stored
            assert await second.put_blobs([(items[0][0], b"other")]) == 0
            with pytest.raises(ConflictError):
                await second.update_refs([RefUpdate("sessions/p", value(4), value(1))])
            await second.update_refs([RefUpdate("sessions/p", value(4), value(2))], message="third")
            assert len(await second.reflog("sessions/p")) == 3
        finally:
            await second.close()

    async def test_a_second_instance_sees_writes(self, backend: BlobBackend) -> None:
        async with self.other(backend) as other:
            items = [blob(b"shared-1"), blob(b"shared-2")]
            await backend.commit(items, [RefUpdate("sessions/s", value(1), None)], message="one")
            assert await other.get_ref("sessions/s") == value(1)
            assert await other.get_blobs([n for n, _ in items]) == dict(items)
            assert await other.put_blobs(items) == 0
            await other.update_refs([RefUpdate("sessions/s", value(2), value(1))], message="two")
            assert await backend.get_ref("sessions/s") == value(2)
            with pytest.raises(ConflictError) as caught:
                await backend.update_refs([RefUpdate("sessions/s", value(3), value(1))])  # stale
            assert caught.value.ref == "sessions/s"
            assert [e.message for e in await backend.reflog("sessions/s")] == ["one", "two"]
            assert await other.delete_blobs([items[0][0]]) == 1
            assert await backend.get_blobs([n for n, _ in items]) == dict(items[1:])

    async def test_concurrent_creators_across_instances(self, backend: BlobBackend) -> None:
        async with self.other(backend) as other:

            async def create(i: int) -> int:
                b = backend if i % 2 else other
                return await b.commit([blob(payload(i))], [RefUpdate("sessions/race", value(i), None)])

            results = await asyncio.gather(*(create(i) for i in range(20)), return_exceptions=True)
            winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
            assert len(winners) == 1, results
            assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException)), results
            assert await other.get_ref("sessions/race") == value(winners[0])
            assert len(await backend.reflog("sessions/race")) == 1

    # The next tests check that a waiter is still waiting while the other side holds the lock:
    # a correct backend passes them whatever the machine's speed.

    async def test_gc_exclusive_holds_off_commits_of_other_instances(self, backend: BlobBackend) -> None:
        async with self.other(backend) as writer:
            async with backend.gc_exclusive():
                save = asyncio.create_task(writer.commit([blob(b"x")], [RefUpdate("sessions/w", value(1), None)]))
                await asyncio.sleep(0.3)
                assert not save.done()
                assert await backend.get_ref("sessions/w") is None
                assert await backend.delete_blobs([blob(b"x")[0]]) == 0  # gc can still work meanwhile
            assert await asyncio.wait_for(save, 60) == 1
            assert await backend.get_ref("sessions/w") == value(1)
            assert await backend.get_blobs([blob(b"x")[0]]) == dict([blob(b"x")])

    async def test_gc_exclusive_holds_off_commits_that_only_check(self, backend: BlobBackend) -> None:
        """A save whose objects were all stored already commits refs and checks only: it relies on
        what it found stored, so it must wait for gc like a save that writes."""
        await backend.commit((), [RefUpdate("castate/epoch", value(9), None)])
        async with self.other(backend) as writer:
            async with backend.gc_exclusive():
                save = asyncio.create_task(
                    writer.commit((), [RefUpdate("sessions/c", value(1), None)], checks={"castate/epoch": value(9)})
                )
                await asyncio.sleep(0.3)
                assert not save.done()
                assert await backend.get_ref("sessions/c") is None
            await asyncio.wait_for(save, 60)
            assert await backend.get_ref("sessions/c") == value(1)

    async def test_gc_exclusive_and_gc_shared_exclude_each_other(self, backend: BlobBackend) -> None:
        async with self.other(backend) as other:
            entered = asyncio.Event()

            async def collect() -> None:
                async with backend.gc_exclusive():
                    entered.set()

            async with other.gc_shared():
                gc = asyncio.create_task(collect())
                await asyncio.sleep(0.3)
                assert not entered.is_set()  # gc waits while an import holds the shared side
            await asyncio.wait_for(gc, 60)
            assert entered.is_set()

            joined = asyncio.Event()

            async def join() -> None:
                async with other.gc_shared():
                    joined.set()

            async with backend.gc_exclusive():
                importer = asyncio.create_task(join())
                await asyncio.sleep(0.3)
                assert not joined.is_set()  # and an import waits while gc deletes
            await asyncio.wait_for(importer, 60)
            assert joined.is_set()
