"""``SESSION@{TIME}``: the state a session had at a time, in the one reference grammar
(castate/repository/refspec.py), through the Python API, the CLI and the UI.

Times are taken from the store's own records (reflog entries, commits), one microsecond
after the move they follow, so no test waits or depends on how fast a save is."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

import castate
from castate.errors import InvalidKeyError, NotFoundError
from castate.repository.refspec import parse_time
from tests.test_cli import run

IST = timezone(timedelta(hours=5, minutes=30))


def just_after(ns: int) -> datetime:
    """The first whole microsecond at or after ``ns`` (ISO times stop at microseconds)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=-(-ns // 1000))


def utc(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time is UTC+05:30, so a time without a zone differs from UTC."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def moves(sm: castate.StateManager, session: str) -> list[castate.backends.ReflogEntry]:
    return await sm.repository.reflog(castate.repository.refs.session_ref(session))


async def test_a_time_names_where_the_head_was_then_restores_included(manager: castate.StateManager) -> None:
    commits = [await manager.save_session("run-1", {"v": v}) for v in (1, 2, 3)]
    await manager.reset_session("run-1", to=commits[0])  # newest move: back to v1
    log = await moves(manager, "run-1")
    assert [e.new.hex() for e in log] == [*commits, commits[0]]
    for entry, after in itertools.pairwise(log):
        assert just_after(entry.time_ns) < just_after(after.time_ns)  # each time falls between two moves
    for entry, expected in zip(log, (1, 2, 3, 1), strict=True):
        when = just_after(entry.time_ns)
        rev = await manager.resolve(f"run-1@{{{utc(when)}}}")
        assert rev.commit == entry.new
        assert rev.session == "run-1"
        assert await manager.restore_checkpoint(f"run-1@{{{when.astimezone(IST).isoformat()}}}") == {"v": expected}
    # After the reset the session's state is v1, though v3 is its newest save.
    assert await manager.restore_checkpoint(f"run-1@{{{utc(just_after(log[3].time_ns))}}}") == {"v": 1}
    assert await manager.restore_checkpoint(f"run-1@{{{utc(just_after(log[2].time_ns))}}}~1") == {"v": 2}
    assert (await manager.resolve("run-1@{2999-01-01T00:00:00Z}")).commit.hex() == commits[0]  # the future: the head
    early = utc(just_after(log[0].time_ns) - timedelta(seconds=1))
    with pytest.raises(NotFoundError, match=r"session 'run-1' did not exist yet; its first state is from 20"):
        await manager.resolve(f"run-1@{{{early}}}")
    with pytest.raises(InvalidKeyError, match="did not exist yet"):  # restore_checkpoint's error for a reference
        await manager.restore_checkpoint(f"run-1@{{{early}}}")
    diff = await manager.diff(f"run-1@{{{utc(just_after(log[1].time_ns))}}}", "run-1")
    assert [(c.op, c.path, c.old, c.new) for c in diff] == [("replace", "/v", 2, 1)]


async def test_without_a_zone_a_time_is_local_time(manager: castate.StateManager, local_zone: None) -> None:
    first = await manager.save_session("s", {"v": 1})
    await manager.save_session("s", {"v": 2})
    entry = (await moves(manager, "s"))[0]
    when = just_after(entry.time_ns)
    local = when.astimezone().replace(tzinfo=None)  # as `castate sessions` prints times, without a zone
    exact = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    assert parse_time(local.isoformat(sep=" ")) == parse_time(utc(when)) == exact
    assert parse_time(local.isoformat() + "Z") != parse_time(local.isoformat())  # read as UTC it is 5.5 h off
    assert (await manager.resolve(f"s@{{{local.isoformat(sep=' ')}}}")).commit.hex() == first
    assert (await manager.resolve(f"s@{{{local.isoformat()}}}")).commit.hex() == first


async def test_past_the_reflog_the_history_of_saves_answers(manager: castate.StateManager) -> None:
    commits = [await manager.save_session("run-1", {"v": v}) for v in (1, 2, 3)]
    await manager.gc(reflog_expire=0)  # every reflog entry expires; the saves stay (the head reaches them)
    assert await moves(manager, "run-1") == []
    saves = await manager.history("run-1")
    assert [s.commit for s in saves] == commits[::-1]
    second = just_after(int(saves[1].timestamp * 1e9))
    rev = await manager.resolve(f"run-1@{{{utc(second + timedelta(microseconds=1))}}}")
    assert rev.commit.hex() == commits[1]
    with pytest.raises(NotFoundError, match="did not exist yet; its first save is from"):
        await manager.resolve(f"run-1@{{{utc(second - timedelta(days=1))}}}")


async def test_a_deleted_session_had_a_state_before_its_deletion(manager: castate.StateManager) -> None:
    await manager.save_session("gone", {"v": 1})
    await manager.delete_session("gone")
    created, deleted = await moves(manager, "gone")
    assert deleted.new is None
    with pytest.raises(NotFoundError, match=r"session 'gone' was deleted at 20"):
        await manager.resolve(f"gone@{{{utc(just_after(deleted.time_ns))}}}")
    before = f"gone@{{{utc(just_after(created.time_ns))}}}"
    assert await manager.restore_checkpoint(before) == {"v": 1}
    await manager.fork(before, "revived")  # what a deleted session held can be brought back
    assert await manager.load_session("revived") == {"v": 1}


async def test_text_in_braces_that_is_no_time_says_so(manager: castate.StateManager) -> None:
    await manager.save_session("run-1", {"v": 1})
    with pytest.raises(NotFoundError, match=r"'yesterday' is not a time; write SESSION@\{TIME\}"):
        await manager.resolve("run-1@{yesterday}")
    with pytest.raises(NotFoundError, match="there is no session 'nobody'"):
        await manager.resolve("nobody@{2026-12-05T10:00:00Z}")


def test_the_cli_takes_a_session_at_a_time(store_path: Path) -> None:
    async def build() -> list[castate.backends.ReflogEntry]:
        async with castate.StateManager(store_path) as sm:
            for v in (1, 2):
                await sm.save_session("run-1", {"v": v, "log": ["a"] * v})
            return await moves(sm, "run-1")

    log = asyncio.run(build())
    first = just_after(log[0].time_ns)
    assert json.loads(run("show", f"run-1@{{{utc(first)}}}", store=store_path)) == {"v": 1, "log": ["a"]}
    local = first.astimezone(IST).replace(tzinfo=None).isoformat(sep=" ")  # as its tables print times, in IST
    shown = run("show", f"run-1@{{{local}}}:/v", store=store_path, env={"TZ": "IST-5:30"})
    assert json.loads(shown) == 1  # the colons of the time are not the REF:POINTER split
    err = run("show", "run-1@{2000-01-01}", store=store_path, code=2)
    assert "did not exist yet" in err


async def test_the_ui_takes_a_session_at_a_time(manager: castate.StateManager) -> None:
    from castate.ui.app import create_app
    from castate.ui.explorer import Explorer

    await manager.save_session("run-1", {"v": 1})
    await manager.save_session("run-1", {"v": 2})
    when = utc(just_after((await moves(manager, "run-1"))[0].time_ns))
    app = create_app(Explorer(manager), allow_writes=False, hosts=frozenset({"127.0.0.1"}), token="t")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.get("/api/diff", params={"a": f"run-1@{{{when}}}", "b": "run-1"})
        assert r.status_code == 200, r.text
        assert r.json()["counts"] == {"add": 0, "remove": 0, "replace": 1}
        assert r.json()["a"]["label"].startswith("session run-1 at ")
        r = await c.get("/api/diff", params={"a": "run-1@{1999-01-01}", "b": "run-1"})
        assert r.status_code == 404
        assert "did not exist yet" in r.json()["error"]
