"""Server outages, for real: stop and restart the PostgreSQL and Redis test servers mid-run.

Each test checks three things: a call while the server is down raises
BackendUnavailableError (never hangs, never another error type), a crash in the middle of
multi-ref commits leaves no half-moved ref, and the same backend object works again once
the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from castate.backends import Backend, RefUpdate
from castate.backends.postgres import PostgresBackend
from castate.backends.redis import RedisBackend
from castate.errors import BackendUnavailableError
from castate.repository.packs import PackStore
from tests.backend_conformance import cid, obj
from tools.servers import PostgresServer, RedisServer


async def _commit_pairs_until_down(b: Backend, stop: Callable[[], None]) -> int:
    """Commit (a, b) -> (i, i) pairs until the server goes; returns the last acknowledged i."""
    await b.commit([obj("base")], [RefUpdate("sessions/a", cid(0), None), RefUpdate("sessions/b", cid(0), None)])
    acked = 0
    i = 1
    loop = asyncio.get_running_loop()
    stopper = loop.run_in_executor(None, lambda: (time.sleep(0.3), stop()))
    try:
        while True:
            try:
                await b.commit(
                    [obj(f"v{i}")],
                    [RefUpdate("sessions/a", cid(i), cid(i - 1)), RefUpdate("sessions/b", cid(i), cid(i - 1))],
                    message=f"pair {i}",
                )
            except BackendUnavailableError:
                return acked
            acked = i
            i += 1
    finally:
        await stopper


async def _check_after_restart(b: Backend, acked: int) -> None:
    refs = await b.get_refs(["sessions/a", "sessions/b"])
    assert refs["sessions/a"] == refs["sessions/b"], "a commit was half-applied"
    assert refs["sessions/a"] in (cid(acked), cid(acked + 1))  # the one in flight moved whole or not at all
    log = await b.reflog("sessions/a")
    assert log[-1].new == refs["sessions/a"]
    for e in log:  # objects are durable before a ref points at them: every logged save has its object
        if e.message.startswith("pair "):
            assert await b.has_objects([obj("v" + e.message.removeprefix("pair "))[0]])
    n = acked + 2
    head = refs["sessions/a"]
    await b.commit([obj("after")], [RefUpdate("sessions/a", cid(n), head), RefUpdate("sessions/b", cid(n), head)])
    assert await b.get_refs(["sessions/a", "sessions/b"]) == {"sessions/a": cid(n), "sessions/b": cid(n)}


async def test_postgres_crash_and_restart(postgres_server: PostgresServer, postgres_url: str) -> None:
    b = PackStore(PostgresBackend(postgres_url, timeout=1))
    await b.open()
    try:
        try:
            acked = await _commit_pairs_until_down(b, lambda: postgres_server.stop("immediate"))
            assert acked > 0
            with pytest.raises(BackendUnavailableError, match="no connection"):
                await b.get_ref("sessions/a")
            with pytest.raises(BackendUnavailableError):
                await b.commit([obj("down")], [RefUpdate("sessions/c", cid(1), None)])
        finally:
            with contextlib.suppress(RuntimeError):
                postgres_server.start()
        await _check_after_restart(b, acked)
        assert await b.get_ref("sessions/c") is None
    finally:
        await b.close()


async def test_postgres_unreachable_at_open() -> None:
    from tools.servers import free_port

    b = PostgresBackend(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout=1)
    with pytest.raises(BackendUnavailableError, match="open"):
        await b.open()


async def test_redis_crash_and_restart() -> None:
    with RedisServer(persistence="aof-always") as server:
        b = PackStore(RedisBackend(server.url, timeout=2))
        await b.open()
        try:
            try:
                acked = await _commit_pairs_until_down(b, lambda: server.stop(kill=True))
                assert acked > 0
                with pytest.raises(BackendUnavailableError):
                    await b.get_ref("sessions/a")
                with pytest.raises(BackendUnavailableError):
                    await b.commit([obj("down")], [RefUpdate("sessions/c", cid(1), None)])
            finally:
                server.start()
            await _check_after_restart(b, acked)
            assert await b.get_ref("sessions/c") is None
        finally:
            await b.close()


async def test_redis_unreachable_at_open() -> None:
    from tools.servers import free_port

    with pytest.raises(BackendUnavailableError, match="open"):
        await RedisBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=1).open()
