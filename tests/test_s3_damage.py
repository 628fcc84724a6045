"""Damaged or hostile ref objects on S3: each is a StoreError naming the object, never a
ValueError or TypeError from deep inside, nor a loop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from castate.backends import RefUpdate
from castate.backends.s3 import S3Backend
from castate.backends.s3.groups import LOG_INLINE, group_key
from castate.errors import StoreError
from castate.testing import blob, value
from tests.conftest import S3_BUCKET
from tools.servers import MotoServer


def _rewrite(moto_server: MotoServer, url: str, key: str, change: Callable[[Any], Any]) -> None:
    """Change the JSON object at ``key`` under the store's prefix behind castate's back."""
    full = f"{url.split('/', 3)[3].split('?')[0]}/{key}"
    c = moto_server.client()
    body = orjson.loads(c.get_object(Bucket=S3_BUCKET, Key=full)["Body"].read())
    new = change(body)  # None: changed in place
    c.put_object(Bucket=S3_BUCKET, Key=full, Body=orjson.dumps(body if new is None else new))


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: body["log"].append(["sessions/s", None, "00", 1]),  # a row with 4 fields
        lambda body: body["log"].append(["sessions/s", None, "00", "soon", "m"]),  # a time that is no number
        lambda body: body["log"].append(["sessions/s", None, "zz", 1, "m"]),  # not hex
        lambda body: body.__setitem__("refs", ["sessions/s"]),  # refs not an object
        lambda body: body.__setitem__("gen", "7"),
        lambda body: [],  # not an object at all
    ],
)
async def test_a_damaged_group_object_is_a_store_error_naming_it(
    s3_url: str, moto_server: MotoServer, damage: Callable[[Any], Any]
) -> None:
    b = S3Backend(s3_url)
    await b.open()
    try:
        await b.update_refs([RefUpdate("sessions/s", value(1), None)])
        _rewrite(moto_server, s3_url, group_key("s:s"), damage)
        b._cache.clear()
        for call in (
            lambda: b.reflog("sessions/s"),
            lambda: b.update_refs([RefUpdate("sessions/s", value(2), value(1))]),
            lambda: b.list_refs(),
        ):
            with pytest.raises(StoreError, match=group_key("s:s")):
                await call()
    finally:
        await b.close()


@pytest.mark.parametrize("lock", ["held", {"t": 1, "n": 0}, {"t": "x"}])
async def test_a_damaged_root_lock_is_a_store_error(s3_url: str, moto_server: MotoServer, lock: Any) -> None:
    b = S3Backend(s3_url)
    await b.open()
    try:
        await b.update_refs([RefUpdate("meta/x", value(1), None)])
        _rewrite(moto_server, s3_url, "refs/root", lambda body: body.__setitem__("lock", lock))
        b._cache.clear()
        b._root_seen = None
        with pytest.raises(StoreError, match="refs/root is damaged"):
            await b.commit([blob(b"y")], [RefUpdate("sessions/s", value(1), None)])
    finally:
        await b.close()


LOOP = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a loop that eats memory dies here
from castate.backends.s3 import S3Backend
from castate.errors import StoreError

async def main():
    b = S3Backend(sys.argv[1])
    await b.open()
    try:
        await b.reflog("sessions/s")
        print("no error")
    except StoreError as e:
        print("StoreError", e)
    await b.close()

asyncio.run(main())
"""


async def test_a_spill_chain_with_a_cycle_is_a_store_error(s3_url: str, moto_server: MotoServer) -> None:
    b = S3Backend(s3_url)
    await b.open()
    try:
        for i in range(LOG_INLINE + 2):
            await b.update_refs([RefUpdate("sessions/s", value(i + 1), value(i) if i else None)], message=str(i))
        g = await b._load("s:s")
        assert g.spill
        spill = g.spill
        _rewrite(moto_server, s3_url, spill, lambda body: body.__setitem__("prev", spill))  # names itself
        proc = subprocess.run([sys.executable, "-c", LOOP, s3_url], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-400:]
        assert proc.stdout.startswith("StoreError reflog of ref group object"), proc.stdout
        assert spill in proc.stdout
    finally:
        await b.close()
