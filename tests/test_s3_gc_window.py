"""gc against saves on S3: every save that read the root unlocked has landed before gc reads
refs (gc waits two save windows after its lock; saves send their ref write within half a
window of their root read). The proxy delays requests, each within the assumed save window."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import castate
from castate.backends import RefUpdate
from castate.backends.s3 import S3Backend
from castate.testing import blob, value
from tests.conftest import S3_BUCKET
from tests.s3_proxy import RuleProxy, via
from tools.servers import MotoServer

STATE = {"doc": "shared document " * 500, "items": list(range(300))}


def _is_root_get(cmd: str, path: str) -> bool:
    return cmd == "GET" and path.split("?")[0].endswith("/refs/root")


async def test_every_save_that_read_the_root_unlocked_lands_before_gc_reads(
    s3_url: str, moto_server: MotoServer
) -> None:
    with RuleProxy(moto_server.port) as proxy:
        a, gc = S3Backend(via(proxy, s3_url)), S3Backend(s3_url)
        await a.open()
        await gc.open()
        assert a.save_window == 0.3
        # blob PUTs take 0.05 s (the ref write is still sent within half a window), the ref PUT
        # 0.28 s (< save_window): the latest a save may land under the assumption
        proxy.rule = lambda cmd, path: (
            ("delay", 0.05)
            if cmd == "PUT" and "/blobs/" in path
            else ("delay", 0.28)
            if cmd == "PUT" and "/refs/s/" in path
            else "pass"
        )
        try:
            save = asyncio.create_task(a.commit([blob(b"x")], [RefUpdate("sessions/s", value(1), None)]))
            while not any(_is_root_get(c, p) for _, c, p, _ in proxy.log):
                await asyncio.sleep(0.001)  # the save read the root: no lock
            async with gc.gc_exclusive():
                landed_before = await gc.get_ref("sessions/s")
            left = time.monotonic()
            await save
            if landed_before is None:  # a loaded machine: the save passed half its window, read again
                assert next(t for t, c, p, _ in proxy.log if c == "PUT" and "/refs/s/" in p) > left
            else:
                assert landed_before == value(1)
            assert await gc.get_ref("sessions/s") == value(1)
        finally:
            await a.close()
            await gc.close()


async def test_a_save_racing_gc_keeps_its_tree(moto_server: MotoServer) -> None:
    """A save deduplicated against garbage gc is about to delete, its root read just before
    gc's lock: its ref lands before gc marks, so the tree stays."""
    url = moto_server.url(S3_BUCKET, f"t{uuid.uuid4().hex[:12]}") + "&save_window=0.3&gc_lease=5"
    async with castate.StateManager(url) as sm:
        await sm.save_session("t", STATE)
        await sm.delete_session("t")  # STATE's objects are now garbage
    loop = asyncio.get_running_loop()
    root_read = asyncio.Event()
    armed = False

    def rule(cmd: str, path: str) -> Any:
        if armed and _is_root_get(cmd, path):
            loop.call_soon_threadsafe(root_read.set)
        if armed and cmd == "PUT" and "/blobs/" in path:
            return ("delay", 0.02)
        if armed and cmd == "PUT" and "/refs/s/" in path:
            return ("delay", 0.29)  # < save_window: within the documented assumption
        return "pass"

    with RuleProxy(moto_server.port) as proxy:
        proxy.rule = rule
        async with castate.StateManager(via(proxy, url)) as saver, castate.StateManager(url) as gcm:
            await saver.list_sessions()  # opened: the catalog knows STATE's packs
            await gcm.list_sessions()
            gcb = gcm.repository._store  # type: ignore[attr-defined]
            assert isinstance(gcb, S3Backend)
            real = gcb.gc_exclusive

            @contextlib.asynccontextmanager
            async def after_the_saver_read_the_root() -> AsyncIterator[None]:
                await root_read.wait()  # gc's lock lands just after the save read the root unlocked
                async with real():
                    yield

            gcb.gc_exclusive = after_the_saver_read_the_root  # type: ignore[method-assign]
            await asyncio.sleep(0.2)  # the saver's last root read is too old to reuse: it reads again
            armed = True
            save = asyncio.create_task(saver.save_session("s", STATE))  # dedups against STATE's packs
            await gcm.gc(grace=0, reflog_expire=0)
            await save
            armed = False
    async with castate.StateManager(url) as sm:
        assert await sm.load_session("s") == STATE
        assert (await sm.fsck()).ok


async def test_a_save_past_half_its_window_reads_the_root_again(s3_url: str, moto_server: MotoServer) -> None:
    with RuleProxy(moto_server.port) as proxy:
        a = S3Backend(via(proxy, s3_url))
        await a.open()
        proxy.rule = lambda cmd, path: ("delay", 0.2) if cmd == "PUT" and "/blobs/" in path else "pass"
        try:
            start = len(proxy.log)
            await a.commit([blob(b"slow")], [RefUpdate("sessions/s", value(1), None)])
            gets = [t for t, c, p, _ in proxy.log[start:] if _is_root_get(c, p)]
            assert len(gets) == 2  # the blob took longer than half a window: the root again
            assert await a.get_ref("sessions/s") == value(1)
        finally:
            await a.close()
