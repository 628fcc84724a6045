"""Format 2 on a real engine (SQLite): damage found and quarantined by fsck, space given back by
gc, and a save after a load in a fresh process sending only what is new."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import castate
from castate.repository.packs import PackStore


def state(tag: str, n: int = 200) -> dict[str, object]:
    rng = random.Random(tag)
    return {"tag": tag, "doc": f"{tag} document " * 300, "items": [f"{tag} {i} {rng.random()}" for i in range(n)]}


def disk(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in tmp_path.glob("store.db*") if p.is_file())


def url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "store.db")


def packs(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "store.db") as conn:
        rows = conn.execute("SELECT name, size FROM blobs WHERE name LIKE 'packs/%'").fetchall()
    return dict(rows)


async def test_a_save_after_a_load_in_a_fresh_process_writes_only_the_change(tmp_path: Path) -> None:
    s = state("a", 2000)
    async with castate.StateManager(url(tmp_path)) as sm:
        await sm.save_session("a", s)
    before = packs(tmp_path)
    async with castate.StateManager(url(tmp_path)) as sm:  # a resume: nothing known of the last save
        s = await sm.load_session("a")
        s["items"].append("one more")
        await sm.save_session("a", s)
    new = set(packs(tmp_path)) - set(before)
    assert len(new) == 1
    assert packs(tmp_path)[new.pop()] < sum(before.values()) / 5  # the tail run, index path, root, commit


async def test_gc_gives_space_back_and_reports_it(tmp_path: Path) -> None:
    async with castate.StateManager(url(tmp_path)) as sm:
        await sm.save_session("keep", state("keep"))
        for i in range(5):
            await sm.save_session("drop", {"blob": os.urandom(300_000), "i": i})
        await sm.delete_session("drop")
        size = disk(tmp_path)
        report = await sm.gc(grace=0, reflog_expire=0)
        assert report.deleted > 0
        assert report.store_bytes_before is not None
        assert report.store_bytes_after is not None
        assert report.store_bytes_after < report.store_bytes_before - 1_000_000
        assert await sm.load_session("keep") == state("keep")
    assert disk(tmp_path) < size - 1_000_000  # the file itself shrank (incremental vacuum, WAL truncated)


async def test_fsck_names_a_damaged_pack_quarantines_it_and_roll_back_heals(tmp_path: Path) -> None:
    """A damaged pack makes its save's objects unreadable (a pack is the unit of damage): fsck
    names the refs, keeps the pack aside, and rolling the ref back to its intact save heals."""
    async with castate.StateManager(url(tmp_path)) as sm:
        await sm.save_session("a", state("a1"))
        await sm.save_session("b", state("b"))
        first = set(packs(tmp_path))
        await sm.save_session("a", state("a2"))
    (victim,) = set(packs(tmp_path)) - first
    with sqlite3.connect(tmp_path / "store.db") as conn:
        data = bytearray(conn.execute("SELECT data FROM blobs WHERE name = ?", (victim,)).fetchone()[0])
        data[-3] ^= 0xFF
        conn.execute("UPDATE blobs SET data = ? WHERE name = ?", (bytes(data), victim))
    async with castate.StateManager(url(tmp_path)) as sm:
        report = await sm.fsck()
        assert not report.ok
        assert report.quarantined > 0
        assert set(report.damaged_refs) == {"sessions/a"}
        (rollback,) = await sm.roll_back_damaged(list(report.damaged_refs))
        assert rollback.restored is not None
        assert (await sm.fsck()).ok
        assert await sm.load_session("a") == state("a1")
        assert await sm.load_session("b") == state("b")
        await sm.save_session("a", state("a2"))  # the lost save written again
        assert (await sm.fsck()).ok
    with sqlite3.connect(tmp_path / "store.db") as conn:
        kept = {n for (n,) in conn.execute("SELECT name FROM blobs WHERE name LIKE 'quarantine/%'")}
    assert f"quarantine/{victim}" in kept  # quarantine/packs/<name>: the pack as it was found


async def test_the_store_reports_its_packs(tmp_path: Path) -> None:
    async with castate.StateManager(url(tmp_path)) as sm:
        await sm.save_session("a", state("a"))
        store = sm.repository.backend
        assert isinstance(store, PackStore)
        stats = await store.stats()
    assert stats["packs"] == len(packs(tmp_path)) == 1
    assert stats["bytes_allocated"] > 0
