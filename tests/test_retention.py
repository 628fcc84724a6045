"""Retention: the keep rules on fixed times, named checkpoints, refusal of an empty policy,
and forget over a store (checkpoints per session, whole sessions, dry run)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

import castate
from castate.backends import MemoryBackend
from castate.errors import InvalidKeyError
from castate.repository import refs as names
from castate.repository.retention import Item, Policy, forget, parse_duration, plan

HOUR = 3600.0
DAY = 86400.0
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC).timestamp()


def items(ages_hours: list[float], named: set[int] = frozenset()) -> list[Item]:  # type: ignore[assignment]
    return [
        Item("checkpoint", f"cp{i}", "s", NOW - age * HOUR, i in named, ((f"checkpoints/s/cp{i}", b"x" * 32),))
        for i, age in enumerate(ages_hours)
    ]


def kept(decisions: list[castate.repository.retention.Decision]) -> list[str]:
    return sorted(d.item.id for d in decisions if d.keep)


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1d12h") == 1.5 * DAY
    assert parse_duration("2w") == 14 * DAY
    assert parse_duration("0.5s") == 0.5
    assert parse_duration("0") == 0
    for bad in ("", "5", "1x", "d", "1d 2h", "-1d"):
        with pytest.raises(InvalidKeyError):
            parse_duration(bad)


def test_empty_policy_is_refused() -> None:
    with pytest.raises(InvalidKeyError, match="empty retention policy"):
        plan(items([1, 2]), Policy())
    with pytest.raises(InvalidKeyError):
        Policy(last=-1)


def test_keep_last_and_within() -> None:
    got = plan(items([0.1, 1, 5, 30, 50]), Policy(last=2), NOW)
    assert kept(got) == ["cp0", "cp1"]
    assert [d.reasons for d in got if d.keep] == [("last 2",), ("last 2",)]
    assert kept(plan(items([0.1, 1, 5, 30, 50]), Policy(within=6 * HOUR), NOW)) == ["cp0", "cp1", "cp2"]


def test_calendar_buckets_keep_the_newest_of_each() -> None:
    # Two per day for five days: daily 3 keeps the newest of each of the last three days.
    ages = [d * 24 + h for d in range(5) for h in (1, 5)]
    got = plan(items(ages), Policy(daily=3), NOW)
    assert kept(got) == ["cp0", "cp2", "cp4"]
    assert plan(items(ages), Policy(hourly=4), NOW)[0].reasons == ("hourly 2026-06-15 11",)
    assert len(kept(plan(items([d * 24 for d in range(40)]), Policy(weekly=2), NOW))) == 2
    assert len(kept(plan(items([d * 24 for d in range(90)]), Policy(monthly=2), NOW))) == 2


def test_rules_combine_and_named_checkpoints_stay() -> None:
    got = plan(items([1, 2, 3, 4, 200], named={4}), Policy(last=1), NOW)
    assert kept(got) == ["cp0", "cp4"]
    assert next(d for d in got if d.item.id == "cp4").reasons == ("named",)
    assert kept(plan(items([1, 2, 3, 4, 200], named={4}), Policy(last=1, keep_named=False), NOW)) == ["cp0"]


async def test_forget_checkpoints_of_one_session() -> None:
    sm = castate.StateManager(MemoryBackend())
    await sm.save_session("s", {"v": 0})
    await sm.save_session("other", {"v": 0})
    named = await sm.create_checkpoint("s", "before_deploy")
    plain = [await sm.create_checkpoint("s") for _ in range(4)]
    other = await sm.create_checkpoint("other")
    dry = await sm.forget(Policy(last=2), session_ids=["s"], dry_run=True)
    assert sorted(d.item.id for d in dry.removed) == sorted(plain[:2])
    assert len(await sm.list_checkpoints("s")) == 5  # a dry run changes nothing
    report = await sm.forget(Policy(last=2), session_ids=["s"])
    assert report.refs_removed == 2
    assert {c.checkpoint_id for c in await sm.list_checkpoints("s")} == {named, *plain[2:]}
    assert [c.checkpoint_id for c in await sm.list_checkpoints("other")] == [other]
    assert await sm.load_session("s") == {"v": 0}  # the head is never a checkpoint to forget


async def test_forget_across_all_sessions_applies_the_policy_per_session() -> None:
    sm = castate.StateManager(MemoryBackend())
    for s in ("a", "b"):
        await sm.save_session(s, {"s": s})
        for _ in range(3):
            await sm.create_checkpoint(s)
    report = await sm.forget(Policy(last=1))
    assert report.refs_removed == 4
    assert [len(await sm.list_checkpoints(s)) for s in ("a", "b")] == [1, 1]


async def test_forget_whole_sessions_by_age() -> None:
    backend = MemoryBackend()
    sm = castate.StateManager(backend)
    for s in ("old", "old-named", "new"):
        await sm.save_session(s, {"s": s})
    await sm.create_checkpoint("old", "checkpoint")
    await sm.create_checkpoint("old-named", "release")
    later = (await sm.list_sessions())[-1].timestamp + 10 * DAY
    # Judged ten days later with keep-within 1 day: only the session with a named checkpoint stays.
    report = await forget(sm.repository, Policy(within=DAY), whole_sessions=True, now=later)
    assert sorted(d.item.id for d in report.removed) == ["new", "old"]
    report = await forget(
        sm.repository, Policy(within=DAY), whole_sessions=True, sessions=["old-named"], now=later, dry_run=True
    )
    assert report.kept[0].reasons == ("named",)
    assert [s.session_id for s in await sm.list_sessions()] == ["old-named"]
    assert await backend.list_refs(names.checkpoint_prefix("old")) == {}


async def test_a_forget_report_prints_commit_ids_as_hex() -> None:
    sm = castate.StateManager(MemoryBackend())
    head = await sm.save_session("s", {"v": 1})
    assert head is not None
    await sm.create_checkpoint("s", "a")
    report = await sm.forget(Policy(last=5), dry_run=True)
    text = repr(report)
    assert head in text  # the checkpoint's target, as the hex id save_session returned
    assert re.search(r"[(\[,=\s]b['\"]", text) is None  # no bytes literal anywhere
    assert "Item(kind='checkpoint', id='s/a/" in text
    ref = report.decisions[0].item.refs[0][0]
    assert f"refs=(({ref!r}, {head!r}),)" in text
    await sm.close()
