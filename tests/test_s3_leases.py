"""Lease holders on S3 stopped (SIGSTOP, in a child process) past their lease, then resumed:
a gc deletes nothing more and an import moves no ref, since others took them as dead."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

from castate.backends import RefUpdate
from castate.backends.s3 import S3Backend
from castate.backends.s3.groups import ROOT
from castate.testing import blob, value
from tests.conftest import S3_BUCKET
from tools.servers import MotoServer

GC = """
import asyncio, os, signal, sys
from castate.backends.s3 import S3Backend

async def main():
    b = S3Backend(sys.argv[1])
    await b.open()
    fence = b._fence
    async def fence_then_stall(what):
        await fence(what)  # the lock is still ours here
        print("fenced", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # paused (swapped out, stopped) past the lease
    b._fence = fence_then_stall
    try:
        async with b.gc_exclusive():
            n = await b.delete_blobs([sys.argv[2]])
            print("deleted", n, flush=True)
    except Exception as e:
        print("stopped", type(e).__name__, flush=True)
    await b.close()

asyncio.run(main())
"""

HOLDER = """
import asyncio, os, signal, sys
from castate.backends import RefUpdate
from castate.backends.s3 import S3Backend

async def main():
    b = S3Backend(sys.argv[1])
    await b.open()
    async with b.gc_shared():
        assert await b.get_blobs([sys.argv[2]])  # an import checks its tree is there
        print("checked", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # paused past the lease
        try:
            await b.update_refs([RefUpdate("sessions/s", bytes.fromhex(sys.argv[3]), None)])
            print("moved", flush=True)
        except Exception as e:
            print("refused", type(e).__name__, flush=True)
    await b.close()

asyncio.run(main())
"""


def _url(moto_server: MotoServer) -> str:
    return moto_server.url(S3_BUCKET, f"t{uuid.uuid4().hex[:12]}") + "&save_window=0.2&gc_lease=1.5"


async def test_a_gc_stalled_past_its_lease_deletes_nothing(moto_server: MotoServer) -> None:
    url = _url(moto_server)
    name, data = blob(b"shared content")
    w = S3Backend(url)
    await w.open()
    await w.put_blobs([(name, data)])  # garbage so far: gc decided to delete it
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", GC, url, name, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"fenced\n"
        # a writer waits out the stopped gc's lease, removes its lock, and saves: its blob exists already
        await asyncio.wait_for(w.commit([(name, data)], [RefUpdate("sessions/s", value(1), None)]), 60)
        assert "lock" not in (await w._load(ROOT)).extra  # the lease was taken over
        os.kill(proc.pid, signal.SIGCONT)
        out = await asyncio.wait_for(proc.stdout.read(), 60)
        await proc.wait()
        assert out == b"stopped StoreError\n"
        assert await w.get_blobs([name]) == {name: data}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await w.close()


async def test_a_shared_holder_stalled_past_its_lease_cannot_move_refs(moto_server: MotoServer) -> None:
    url = _url(moto_server)
    name, data = blob(b"tree")
    gc = S3Backend(url, lock_timeout=30)
    await gc.open()
    await gc.put_blobs([(name, data)])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, name, value(1).hex(), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"checked\n"
        async with gc.gc_exclusive():  # waits gc_lease, drops the stopped holder's token
            assert not (await gc._load(ROOT)).extra.get("shared")
            assert await gc.delete_blobs([name]) == 1  # the tree was unreachable: gc deletes it
        os.kill(proc.pid, signal.SIGCONT)
        out = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
        await proc.wait()
        assert out == "refused StoreError\n"
        assert await gc.get_ref("sessions/s") is None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await gc.close()
