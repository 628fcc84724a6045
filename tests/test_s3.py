"""The S3 blob backend over real S3 servers (moto's, and SeaweedFS): the blob suite, the
object-level suite over a pack store, the conditional-write probe, the gc lease, and
several processes saving one session."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import castate
from castate.backends import Backend, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.s3 import S3Backend
from castate.backends.s3 import backend as s3_backend
from castate.backends.s3.groups import LOG_INLINE, ROOT, Group, group_key
from castate.backends.s3.requests import Stale
from castate.errors import BackendUnavailableError, ConflictError, StoreError, StoreNotFoundError
from castate.repository.packs import PackStore
from castate.testing import PersistentBlobBackendTests, blob, value
from tests.backend_conformance import PersistentBackendConformance
from tests.conftest import S3_BUCKET
from tests.s3_proxy import RuleProxy, S3Proxy, via
from tests.test_cli import run
from tools.servers import MotoServer


class TestS3Blobs(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _url(self, s3_url: str) -> None:
        self.url = s3_url  # a fresh key prefix per test

    async def make_backend(self) -> BlobBackend:
        return S3Backend(self.url)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return S3Backend(self.url)


class TestS3PackStore(PersistentBackendConformance):
    """The object-level contract, kept by the pack store on top of this backend."""

    @pytest.fixture(autouse=True)
    def _url(self, s3_url: str) -> None:
        self.url = s3_url

    async def make_backend(self) -> Backend:
        return PackStore(S3Backend(self.url))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return PackStore(S3Backend(self.url, **options))  # type: ignore[arg-type]


# -- URLs, creation, the open probe ------------------------------------------------------------------


def test_s3_urls() -> None:
    b = castate.open("s3://bucket/team/a?endpoint=http://127.0.0.1:9000&region=eu-west-1&save_window=2")
    assert isinstance(b, S3Backend)
    assert (b.loc.bucket, b.loc.prefix, b.loc.endpoint, b.loc.region) == (
        "bucket",
        "team/a",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert b.save_window == 2
    assert b.create is None  # castate.open: a write creates the store
    assert b.location == "s3://bucket/team/a at http://127.0.0.1:9000"
    assert castate.open("s3://bucket").loc.prefix == ""
    with pytest.raises(ValueError, match="no credentials"):
        castate.open("s3://AKIA:secret@bucket/p")
    with pytest.raises(ValueError, match="unknown S3 URL parameter"):
        castate.open("s3://bucket/p?endpont=http://x")
    with pytest.raises(ValueError, match=r"'\.\.' part"):
        castate.open("s3://bucket/a/../b")
    with pytest.raises(ValueError, match="no credentials") as caught:  # location is in every message
        castate.open("s3://bucket/p?endpoint=http://AKIA:s3cr3t@127.0.0.1:9000")
    assert "s3cr3t" not in str(caught.value)
    for url in ("s3://bucket/run#1", "s3://bucket/run?region=r#x"):  # '#' would cut the prefix silently
        with pytest.raises(ValueError, match="'#'"):
            castate.open(url)
    for bad in ("save_window=1e-300", "save_window=0.05", "save_window=nan", "save_window=5&gc_lease=9"):
        with pytest.raises(ValueError, match=r"save_window|gc_lease"):
            S3Backend(f"s3://bucket/p?{bad}")


async def test_a_save_slower_than_half_its_window_gives_up_after_lock_timeout(moto_server: MotoServer) -> None:
    url = moto_server.url(S3_BUCKET, f"t{uuid.uuid4().hex[:12]}") + "&save_window=0.1"
    with RuleProxy(moto_server.port) as proxy:
        b = S3Backend(via(proxy, url), lock_timeout=1)
        await b.open()
        proxy.rule = lambda cmd, path: ("delay", 0.06) if cmd == "GET" else "pass"  # every round > 0.05 s
        try:
            with pytest.raises(StoreError, match="longer than half the store's save window"):
                await asyncio.wait_for(b.commit([blob(b"x")], [RefUpdate("sessions/s", value(1), None)]), 30)
            assert await b.get_ref("sessions/s") is None
        finally:
            await b.close()


async def test_reads_never_create_a_store_and_writes_do(s3_url: str, moto_server: MotoServer) -> None:
    for create in (None, False):
        with pytest.raises(StoreNotFoundError, match="no castate store at"):
            await S3Backend(s3_url, create=create).open()
    async with castate.StateManager(castate.open(s3_url)) as sm:
        with pytest.raises(StoreNotFoundError, match="a save creates it"):
            await sm.list_sessions()
        await sm.save_session("s", {"v": 1})
    async with castate.StateManager(castate.open(s3_url, create=False)) as sm:
        assert [s.session_id for s in await sm.list_sessions()] == ["s"]
    with pytest.raises(StoreNotFoundError, match="bucket"):
        await S3Backend(moto_server.url("no-such-bucket", "p")).open()


def test_cli_over_s3(s3_url: str) -> None:
    assert "no castate store at" in run("--store", s3_url, "sessions", code=3)
    assert "is ready" in run("--store", s3_url, "init")
    asyncio.run(_save(s3_url))
    assert [s["session_id"] for s in json.loads(run("--store", s3_url, "sessions", "--json"))] == ["s"]


async def _save(url: str) -> None:
    async with castate.StateManager(url) as sm:
        await sm.save_session("s", {"v": 1})


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[S3Proxy]:
    with S3Proxy(moto_server.port) as p:
        yield p


async def test_a_server_that_ignores_conditional_writes_is_refused(s3_url: str, proxy: S3Proxy) -> None:
    proxy.mode = "ignore-conditions"  # what s3rver does
    with pytest.raises(StoreError, match="ignores conditional writes"):
        await S3Backend(via(proxy, s3_url)).open()
    with pytest.raises(StoreNotFoundError):  # and nothing was created
        await S3Backend(s3_url, create=False).open()
    b = S3Backend(s3_url)  # a store made on a good server: refused through a bad one too
    await b.open()
    await b.close()
    bad = S3Backend(via(proxy, s3_url))
    await bad.open()  # opening for reading sends no write: the probe comes before the first write
    try:
        assert await bad.list_refs() == {}
        with pytest.raises(StoreError, match="If-None-Match"):
            await bad.update_refs([RefUpdate("sessions/s", value(1), None)])
        with pytest.raises(StoreError, match="If-None-Match"):
            await bad.put_blobs([blob(b"x")])
    finally:
        await bad.close()


# -- lost replies, dead servers -----------------------------------------------------------------------


async def test_a_ref_write_whose_reply_was_lost(s3_url: str, proxy: S3Proxy) -> None:
    b = S3Backend(via(proxy, s3_url))
    await b.open()
    try:
        await b.commit([blob(b"one")], [RefUpdate("sessions/s", value(1), None)], message="one")
        proxy.mode = "lose-reply"  # the write lands, the reply does not: read back, it is ours
        await b.commit([blob(b"two")], [RefUpdate("sessions/s", value(2), value(1))], message="two")
        assert proxy.faults == 1
        proxy.mode = "drop"  # the write never arrives: the error says it may have
        with pytest.raises(BackendUnavailableError, match="may have landed"):
            await b.commit([blob(b"three")], [RefUpdate("sessions/s", value(3), value(2))], message="three")
        proxy.mode = "pass"
        assert await b.get_ref("sessions/s") == value(2)
        assert [e.message for e in await b.reflog("sessions/s")] == ["one", "two"]
        await b.commit([blob(b"three")], [RefUpdate("sessions/s", value(3), value(2))], message="three")
        assert await b.get_ref("sessions/s") == value(3)
        proxy.mode = "conflict-once"  # 409: not applied, so read the group again and write once more
        await b.commit([blob(b"four")], [RefUpdate("sessions/s", value(4), value(3))], message="four")
        assert proxy.faults == 3
        assert [e.message for e in await b.reflog("sessions/s")] == ["one", "two", "three", "four"]
    finally:
        await b.close()


async def test_a_stopped_server_is_backend_unavailable() -> None:
    with MotoServer() as server, pytest.MonkeyPatch.context() as mp:
        for key, val in server.env().items():
            mp.setenv(key, val)
        server.create_bucket("castate-down")
        b = S3Backend(server.url("castate-down", "p"), timeout=2)
        await b.open()
        await b.commit([blob(b"x")], [RefUpdate("sessions/s", value(1), None)])
        server.stop(kill=True)
        with pytest.raises(BackendUnavailableError, match="did not answer"):
            await b.get_refs(["sessions/s"])
        with pytest.raises(BackendUnavailableError):
            await b.commit([blob(b"y")], [RefUpdate("sessions/s", value(2), value(1))])
        await b.close()


# -- the layout: requests per save, ABA, the reflog kept small -------------------------------------------


async def test_requests_per_save_and_per_checkpoint(s3_url: str) -> None:
    url = s3_url.replace("save_window=0.3&gc_lease=5", "save_window=60&gc_lease=120")  # no save here outlasts a quarter
    async with castate.StateManager(url) as sm:
        await sm.save_session("s", {"step": 0, "text": "x" * 1000})
        backend = sm.repository._store
        assert isinstance(backend, S3Backend)
        before = backend.requests
        for step in range(1, 11):
            await sm.save_session("s", {"step": step, "text": "x" * 1000})
        # the pack and its index segment (create-only PUTs), one conditional PUT of the session's
        # refs; the root (gc's lock, the epoch) as read by the save before, within half a window
        assert backend.requests - before == 3 * 10
        before = backend.requests
        await sm.create_checkpoint("s", "cp")
        assert backend.requests - before == 2  # read the session's group, write it
        assert (await sm.load_session("s"))["step"] == 10
        for other in ("t", "u"):
            await sm.save_session(other, {"step": 0})
        before = backend.requests
        assert set(await backend.list_refs("sessions/")) == {"sessions/s", "sessions/t", "sessions/u"}
        assert backend.requests - before == 1  # one LIST: every group's ETag matches the copy held
    other = s3_url.replace("/t", "/u", 1)  # another store: the window is the store's, fixed at creation
    async with castate.StateManager(other) as sm:  # half a window (0.15 s) passes between saves
        await sm.save_session("s", {"step": 0, "text": "x" * 1000})
        backend = sm.repository._store
        assert isinstance(backend, S3Backend)
        await asyncio.sleep(0.2)
        before = backend.requests
        await sm.save_session("s", {"step": 1, "text": "x" * 1000})
        assert backend.requests - before == 4  # the root is read again first


async def test_a_ref_group_never_repeats_its_etag(s3_url: str) -> None:
    a, b = S3Backend(s3_url), S3Backend(s3_url)
    await a.open()
    await b.open()
    try:
        await a.update_refs([RefUpdate("sessions/s", value(1), None)])
        first = (await a._load("s:s")).etag
        await b.update_refs([RefUpdate("sessions/s", value(2), value(1))])
        await b.update_refs([RefUpdate("sessions/s", value(1), value(2))])  # X -> Y -> X
        assert (await b._load("s:s")).etag != first  # the generation counter: a new body, a new ETag
        stale = a._cache[group_key("s:s")]
        assert stale.etag == first
        new = stale.successor()
        new.refs["sessions/s"] = value(9)
        with pytest.raises(Stale):  # a writer holding the first ETag cannot win
            await a._put_group(new, "test")
    finally:
        await a.close()
        await b.close()


async def test_the_reflog_spills_out_of_the_group_object(s3_url: str) -> None:
    b = S3Backend(s3_url)
    await b.open()
    try:
        for i in range(100):
            await b.update_refs([RefUpdate("sessions/s", value(i + 1), value(i) if i else None)], message=str(i))
        group = await b._load("s:s")
        assert len(group.log) <= LOG_INLINE
        assert len(group.encode()) < 10_000
        log = await b.reflog("sessions/s")
        assert [e.message for e in log] == [str(i) for i in range(100)]
        assert [e.new for e in log] == [value(i + 1) for i in range(100)]
        cut = log[60].time_ns
        assert await b.expire_reflog(cut) == sum(1 for e in log if e.time_ns < cut)
        assert [e.message for e in await b.reflog("sessions/s")] == [e.message for e in log if e.time_ns >= cut]
        assert await b.get_ref("sessions/s") == value(100)
    finally:
        await b.close()


# -- gc's lease -----------------------------------------------------------------------------------------

HOLD_GC = """
import asyncio, sys
from castate.backends.s3 import S3Backend

async def main():
    b = S3Backend(sys.argv[1])
    await b.open()
    async with b.gc_exclusive():
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_dead_gc_holds_saves_off_for_its_lease_only(moto_server: MotoServer) -> None:
    url = moto_server.url(S3_BUCKET, f"t{uuid.uuid4().hex[:12]}") + "&save_window=0.2&gc_lease=1.5"
    b = S3Backend(url)
    await b.open()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLD_GC, url, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"held\n"
        save = asyncio.create_task(b.commit([blob(b"x")], [RefUpdate("sessions/s", value(1), None)]))
        await asyncio.sleep(0.5)
        assert not save.done()  # a live gc: the save waits
        proc.kill()  # gc dies holding the lock: its lease stops being renewed
        await proc.wait()
        assert await asyncio.wait_for(save, 60) == 1  # taken as dead once unchanged for gc_lease
        assert await b.get_ref("sessions/s") == value(1)
        # the dead holder's lock was removed: were it only stalled, its fence now stops it
        assert "lock" not in (await b._load(ROOT)).extra
        async with b.gc_exclusive():  # and the lock can be taken again
            pass
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await b.close()


async def test_a_gc_whose_lock_was_taken_over_deletes_nothing(s3_url: str) -> None:
    gc, other = S3Backend(s3_url), S3Backend(s3_url)
    await gc.open()
    await other.open()
    try:
        await gc.put_blobs([blob(b"keep")])
        async with gc.gc_exclusive():

            def steal(new: Group) -> bool:  # what a waiter does once gc's lease has lapsed
                new.extra["lock"] = {"t": "another gc", "n": 0}
                return True

            await other._change_root(steal, "test")
            with pytest.raises(StoreError, match="lost its lock"):
                await gc.delete_blobs([blob(b"keep")[0]])
        assert await gc.get_blobs([blob(b"keep")[0]]) == dict([blob(b"keep")])
    finally:
        await gc.close()
        await other.close()


# -- damage ---------------------------------------------------------------------------------------------


def packs_state(tag: str) -> dict[str, object]:
    return {"tag": tag, "doc": f"{tag} document " * 300, "items": [f"{tag} {i}" for i in range(200)]}


async def test_fsck_names_a_damaged_pack_quarantines_it_and_roll_back_heals(
    s3_url: str, moto_server: MotoServer
) -> None:
    """A pack whose bytes changed on the server (written past castate): fsck names the refs it
    makes unreadable, keeps it aside, and rolling the ref back to its intact save heals."""

    async def pack_names() -> set[str]:
        b = S3Backend(s3_url)
        await b.open()
        try:
            return {i.name for i in await b.list_blobs("packs/")}
        finally:
            await b.close()

    async with castate.StateManager(s3_url) as sm:
        await sm.save_session("a", packs_state("a1"))
        await sm.save_session("b", packs_state("b"))
        first = await pack_names()
        await sm.save_session("a", packs_state("a2"))
    victims = await pack_names() - first
    client = moto_server.client()
    prefix = s3_url.split("/", 3)[3].split("?")[0]
    for victim in victims:
        key = f"{prefix}/blobs/{victim}"
        data = bytearray(client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read())
        data[-3] ^= 0xFF
        client.put_object(Bucket=S3_BUCKET, Key=key, Body=bytes(data))
    async with castate.StateManager(s3_url) as sm:
        report = await sm.fsck()
        assert not report.ok
        assert report.quarantined > 0
        assert set(report.damaged_refs) == {"sessions/a"}
        (rollback,) = await sm.roll_back_damaged(list(report.damaged_refs))
        assert rollback.restored is not None
        assert (await sm.fsck()).ok
        assert await sm.load_session("a") == packs_state("a1")
        assert await sm.load_session("b") == packs_state("b")
        await sm.save_session("a", packs_state("a2"))
        assert (await sm.fsck()).ok
    b = S3Backend(s3_url)
    await b.open()
    try:
        kept = {i.name for i in await b.list_blobs("quarantine/")}
    finally:
        await b.close()
    assert {f"quarantine/{v}" for v in victims} <= kept  # each pack as it was found


async def test_a_commit_over_two_sessions_undoes_the_first_when_the_second_loses_a_race(s3_url: str) -> None:
    a, other = S3Backend(s3_url), S3Backend(s3_url)
    await a.open()
    await other.open()
    try:
        first, second = sorted(["s:x", "s:y"], key=group_key)
        ref = {"s:x": "sessions/x", "s:y": "sessions/y"}
        write_group = a._write_group

        async def racing(name: str, *args: Any) -> Any:  # another writer gets in between the two writes
            if name == second:
                await other.update_refs([RefUpdate(ref[second], value(9), None)], message="other")
            return await write_group(name, *args)

        a._write_group = racing  # type: ignore[method-assign]
        with pytest.raises(ConflictError) as caught:
            await a.update_refs([RefUpdate("sessions/x", value(1), None), RefUpdate("sessions/y", value(2), None)])
        assert caught.value.ref == ref[second]
        assert await other.list_refs("sessions/") == {ref[second]: value(9)}  # the first write was undone
        assert await other.reflog(ref[first]) == []
        assert [e.message for e in await other.reflog(ref[second])] == ["other"]
    finally:
        await a.close()
        await other.close()


async def test_a_multi_group_commit_whose_later_write_is_unknown_keeps_the_earlier(
    s3_url: str, moto_server: MotoServer
) -> None:
    """The second group's PUT lands but its reply is lost and the read-back fails: the first
    group is not undone (that would leave only the second), and the error says so."""
    second = max(["s:x", "s:y"], key=group_key)
    second_key = group_key(second)
    state = {"armed": False, "lost": False}

    def rule(cmd: str, path: str) -> Any:
        if state["armed"] and second_key in path:
            if cmd == "PUT" and not state["lost"]:
                state["lost"] = True
                return "lose-reply"  # lands on the server, the client never hears
            if cmd == "GET" and state["lost"]:
                return "drop"  # the read-back fails too
        return "pass"

    with RuleProxy(moto_server.port) as proxy:
        proxy.rule = rule
        a = S3Backend(via(proxy, s3_url), timeout=3)
        await a.open()
        state["armed"] = True
        try:
            with pytest.raises(BackendUnavailableError, match="may be partly applied"):
                await a.update_refs([RefUpdate("sessions/x", value(1), None), RefUpdate("sessions/y", value(2), None)])
        finally:
            state["armed"] = False
            await a.close()
    b = S3Backend(s3_url)
    await b.open()
    try:
        assert await b.list_refs("sessions/") == {"sessions/x": value(1), "sessions/y": value(2)}
    finally:
        await b.close()


async def test_a_request_the_server_refuses_is_a_store_error(seaweed_url: str) -> None:
    """SeaweedFS keeps objects as files: a key part over 255 bytes is refused (400 KeyTooLongError).
    That is no outage (retrying cannot help): StoreError naming the server's answer, and the
    store goes on. castate's own blob names are under 100 bytes."""
    b = S3Backend(seaweed_url)
    await b.open()
    try:
        with pytest.raises(StoreError, match="refused the request \\(400 KeyTooLongError\\)") as caught:
            await b.put_blobs([("a" * 256, b"x")])
        assert not isinstance(caught.value, BackendUnavailableError)
        assert await b.put_blobs([blob(b"after")]) == 1
    finally:
        await b.close()


async def test_a_store_inside_another_is_refused(moto_server: MotoServer) -> None:
    """The outer store's gc would take the inner one's objects (under its blobs/) for its own."""
    base = f"t{uuid.uuid4().hex[:10]}"
    async with castate.StateManager(moto_server.url(S3_BUCKET, base) + "&save_window=0.2") as sm:
        await sm.save_session("o", {"v": 1})
    for inner in (f"{base}/blobs/index", f"{base}/x"):
        with pytest.raises(StoreError, match=f"inside the castate store at s3://{S3_BUCKET}/{base}:"):
            await S3Backend(moto_server.url(S3_BUCKET, inner)).open()
    async with castate.StateManager(moto_server.url(S3_BUCKET, base) + "&save_window=0.2") as sm:
        assert await sm.load_session("o") == {"v": 1}
    sibling = S3Backend(moto_server.url(S3_BUCKET, f"{base}x/y"))  # a prefix that only starts alike
    await sibling.open()
    await sibling.close()


def _reflog_keys(moto_server: MotoServer, url: str) -> list[str]:
    prefix = url.split("/", 3)[3].split("?")[0]
    listed = moto_server.client().list_objects_v2(Bucket=S3_BUCKET, Prefix=f"{prefix}/reflog/")
    return [o["Key"] for o in listed.get("Contents", [])]


async def test_spills_of_lost_writes_do_not_outlive_the_reflog(
    s3_url: str, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers race on one session's group: the loser's spill is deleted at once, and
    expiring everything leaves no reflog object (leftovers past the grace go too)."""
    a, b = S3Backend(s3_url), S3Backend(s3_url)
    await a.open()
    await b.open()
    try:
        for i in range(2 * LOG_INLINE):
            await asyncio.gather(
                a.update_refs([RefUpdate(f"checkpoints/s/a{i}", value(i), None)], message=f"a{i}"),
                b.update_refs([RefUpdate(f"checkpoints/s/b{i}", value(i), None)], message=f"b{i}"),
            )
        assert len(await a.reflog()) == 4 * LOG_INLINE
        # a leftover of a writer that died between its spill and its group write
        prefix = s3_url.split("/", 3)[3].split("?")[0]
        orphan = f"{prefix}/reflog/{group_key('s:s').rsplit('/', 1)[-1]}/{0:016d}-dead"
        moto_server.client().put_object(Bucket=S3_BUCKET, Key=orphan, Body=b'{"v": 1, "prev": null, "log": []}')
        await a.expire_reflog(time.time_ns() + 10**12)
        assert _reflog_keys(moto_server, s3_url) == [orphan]  # younger than the grace: maybe in flight
        monkeypatch.setattr(s3_backend, "ORPHAN_GRACE_NS", 0)
        await a.expire_reflog(time.time_ns() + 10**12)
        assert _reflog_keys(moto_server, s3_url) == []
        assert await a.reflog() == []
        assert len(await a.list_refs("checkpoints/")) == 4 * LOG_INLINE
    finally:
        await a.close()
        await b.close()
