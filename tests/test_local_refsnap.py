"""refs.snapshot: a cache of the replayed refs that an open may start from, never trusted over the journal.

Every test compares a journal opened with the snapshot in some state (intact, damaged,
truncated, stale, of another generation, missing) with a full replay of the same journal
(``_refresh(use_snapshot=False)``): the refs, record count and reflog must be the same.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castate.backends import RefUpdate
from castate.backends.local import journal as journal_mod
from castate.backends.local import refsnap
from castate.backends.local.journal import RefJournal
from castate.backends.local.locks import FileLock
from castate.errors import CorruptFileError


def cid(n: int) -> bytes:
    return blake3.blake3(str(n).encode()).digest()


@pytest.fixture(autouse=True)
def small_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshot after every 1 KiB of journal, so a few dozen records make several."""
    monkeypatch.setattr(journal_mod, "SNAPSHOT_MIN_TAIL", 1024)


def opened(path: Path) -> RefJournal:
    j = RefJournal(path / "refs.journal", FileLock(path / "refs.lock"))
    if not j.path.exists():
        j.create()
    j.refresh()
    return j


def full_replay(path: Path) -> RefJournal:
    j = RefJournal(path / "refs.journal", FileLock(path / "refs.lock"))
    j._refresh(use_snapshot=False)
    return j


def write(j: RefJournal, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        name = f"sessions/r{i % 5}"
        j.update([RefUpdate(name, cid(i), j.refs.get(name)), RefUpdate(f"checkpoints/c{i}", cid(i), None)], f"m{i}")


def same_as_full_replay(path: Path) -> RefJournal:
    j = opened(path)
    full = full_replay(path)
    assert j.refs == full.refs
    assert j.count == full.count
    assert j.reflog() == full.reflog()
    return j


def test_a_writer_keeps_a_snapshot_and_an_open_starts_from_it(tmp_path: Path) -> None:
    write(opened(tmp_path), 60)
    snap = refsnap.load(tmp_path / "refs.snapshot")
    assert snap is not None
    j = same_as_full_replay(tmp_path)
    assert j.count == 60
    assert j._snap_offset == snap.offset  # the open started there and replayed only the tail
    assert snap.offset <= j.path.stat().st_size
    assert len(j.refs) == 65  # five sessions, sixty checkpoints


def test_a_new_writer_continues_from_the_snapshot(tmp_path: Path) -> None:
    write(opened(tmp_path), 40)
    j = opened(tmp_path)
    write(j, 40, start=40)
    assert same_as_full_replay(tmp_path).count == 80


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped", "empty", "garbage", "newer-version"])
def test_a_damaged_or_missing_snapshot_is_ignored(tmp_path: Path, how: str) -> None:
    write(opened(tmp_path), 50)
    path = tmp_path / "refs.snapshot"
    data = bytearray(path.read_bytes())
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        data[len(data) // 3] ^= 0x10
        path.write_bytes(data)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    else:
        data[8] = refsnap.VERSION + 1
        body = bytes(data[:-32])
        path.write_bytes(body + blake3.blake3(body).digest())
    assert refsnap.load(path) is None
    assert same_as_full_replay(tmp_path).count == 50


def test_a_stale_snapshot_of_the_same_journal_is_used_and_the_tail_replayed(tmp_path: Path) -> None:
    j = opened(tmp_path)
    write(j, 30)
    old = (tmp_path / "refs.snapshot").read_bytes()
    write(j, 30, start=30)
    (tmp_path / "refs.snapshot").write_bytes(old)  # older offset: covers fewer records
    assert same_as_full_replay(tmp_path).count == 60


def test_a_snapshot_of_another_generation_is_ignored(tmp_path: Path) -> None:
    j = opened(tmp_path)
    write(j, 40)
    old = (tmp_path / "refs.snapshot").read_bytes()
    assert j.compact(j.records[20].time_ns) == 20  # a new journal file, a new generation
    (tmp_path / "refs.snapshot").write_bytes(old)
    snap = refsnap.load(tmp_path / "refs.snapshot")
    assert snap is not None
    assert snap.generation != j._generation
    assert same_as_full_replay(tmp_path).count == 21


def test_a_snapshot_whose_last_record_differs_is_ignored(tmp_path: Path) -> None:
    """Same generation and a valid checksum, but the bytes it names are another record (a relaxed
    store that lost its tail in a power cut, then took new records): the journal wins."""
    j = opened(tmp_path)
    write(j, 40)
    snap = refsnap.load(tmp_path / "refs.snapshot")
    assert snap is not None
    forged = refsnap.Snapshot(
        snap.generation, snap.offset, snap.last_start, snap.seq, snap.count, bytes(32), {"sessions/r0": cid(999)}
    )
    assert refsnap.write(tmp_path / "refs.snapshot", forged)
    assert same_as_full_replay(tmp_path).refs["sessions/r0"] != cid(999)


def test_a_snapshot_that_disagrees_with_the_tail_falls_back_to_a_full_replay(tmp_path: Path) -> None:
    """A snapshot that passes every check but whose refs do not match the records after it (only a
    deliberate forgery can do this) is found out when the tail does not apply, and replaced by a full replay."""
    j = opened(tmp_path)
    write(j, 40)
    snap = refsnap.load(tmp_path / "refs.snapshot")
    assert snap is not None
    write(j, 5, start=40)  # these records move sessions/r0 ... r4 from their snapshot values
    wrong = dict(snap.refs)
    wrong["sessions/r0"] = cid(12345)
    forged = refsnap.Snapshot(
        snap.generation, snap.offset, snap.last_start, snap.seq, snap.count, snap.last_hash, wrong
    )
    assert refsnap.write(tmp_path / "refs.snapshot", forged)
    assert same_as_full_replay(tmp_path).count == 45


def test_a_snapshot_past_the_end_of_the_journal_is_ignored(tmp_path: Path) -> None:
    j = opened(tmp_path)
    write(j, 40)
    snap = refsnap.load(tmp_path / "refs.snapshot")
    assert snap is not None
    os.truncate(j.path, snap.last_start + 5)  # the journal lost its tail (and the snapshot's last record is torn)
    same_as_full_replay(tmp_path)


def test_damage_before_the_snapshot_offset_is_still_found_by_a_full_read(tmp_path: Path) -> None:
    """An open from the snapshot skips the covered bytes; reading the reflog reads them, so
    damage there is still reported (and fsck --repair-refs rebuilds the journal)."""
    j = opened(tmp_path)
    write(j, 40)
    data = bytearray(j.path.read_bytes())
    data[200] ^= 0x01
    j.path.write_bytes(data)  # same inode and generation
    again = opened(tmp_path)
    with pytest.raises(CorruptFileError):
        again.reflog()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 60),
    keep=st.integers(0, 60),
    damage=st.sampled_from(["none", "truncate", "flip", "stale", "drop-journal-tail"]),
    at=st.floats(0, 1),
)
def test_any_snapshot_state_gives_the_refs_of_a_full_replay(n: int, keep: int, damage: str, at: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        j = opened(path)
        write(j, min(keep, n))
        stale = (path / "refs.snapshot").read_bytes() if (path / "refs.snapshot").exists() else None
        write(j, n - min(keep, n), start=min(keep, n))
        snap_path = path / "refs.snapshot"
        if snap_path.exists():
            data = bytearray(snap_path.read_bytes())
            pos = int(at * (len(data) - 1))
            if damage == "truncate":
                snap_path.write_bytes(data[:pos])
            elif damage == "flip":
                data[pos] ^= 0x40
                snap_path.write_bytes(data)
            elif damage == "stale" and stale is not None:
                snap_path.write_bytes(stale)
        if damage == "drop-journal-tail":
            size = j.path.stat().st_size
            os.truncate(j.path, max(journal_mod.HEADER_SIZE, int(size * at)))
        try:
            full = full_replay(path)
        except CorruptFileError:
            with pytest.raises(CorruptFileError):
                opened(path)
            return
        j2 = opened(path)
        assert j2.refs == full.refs
        assert j2.count == full.count


async def test_fsck_storage_check_and_repair_read_past_the_snapshot(tmp_path: Path) -> None:
    """Damage the snapshot covers: the store opens, the storage check names the journal, and
    the repair rebuilds it (it never trusts the snapshot)."""
    from castate.backends.local import LocalBackend

    store = tmp_path / "store"
    b = LocalBackend(store)
    await b.open()
    for i in range(40):
        await b.update_refs([RefUpdate(f"checkpoints/c{i}", cid(i), None)], message=f"m{i}")
    await b.close()
    assert refsnap.load(store / "refs.snapshot") is not None
    journal_path = store / "refs.journal"
    data = bytearray(journal_path.read_bytes())
    data[journal_mod.HEADER_SIZE + 60] ^= 0x01  # inside the first record
    journal_path.write_bytes(data)
    again = LocalBackend(store)
    await again.open()
    try:
        assert len(await again.list_refs("checkpoints/")) == 40
        problems = await again.check_storage()
        assert any("ref journal" in p for p in problems), problems
        report = await again.repair_refs()
        assert report.damaged
        assert report.lost_records == 1
        assert not await again.check_storage()
        assert len(await again.list_refs("checkpoints/")) == 39
    finally:
        await again.close()
