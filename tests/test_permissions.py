"""Files and directories castate creates are private to their owner (0600 / 0700), whatever
the umask: workflow state often holds secrets. Covers every path that creates one: a new
store, saves (packed and loose), a journal rewrite, gc's pack rewrite, fsck's quarantine, the
ref journal repair, and exported bundles."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import castate
from castate.backends.local import journal as journal_mod
from castate.backends.local.journal import HEADER_SIZE
from castate.backends.urls import open_backend


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive: modes are what castate asks for
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.usefixtures("open_umask")
async def test_everything_a_store_creates_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "SNAPSHOT_MIN_TAIL", 256)  # so the saves below write refs.snapshot
    path = tmp_path / "store"
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path, volume_size=1 << 10))) as sm:
        await sm.save_session("other", {"secret": "x" * 5000})
        for step in range(3):
            await sm.save_session("s", {"secret": f"token {step} " * 500})
            await sm.create_checkpoint("s", f"cp{step}")
        await sm.delete_session("other")
        await sm.gc(grace=0, reflog_expire=0)  # moves live blobs to a new volume, compacts the journal
        await sm.export_session("s", tmp_path / "s.castate")
    journal = path / "refs.journal"
    data = bytearray(journal.read_bytes())
    data[HEADER_SIZE + 20] ^= 0xFF
    journal.write_bytes(bytes(data))
    os.chmod(journal, 0o600)  # as castate wrote it; the repair writes its own copies
    assert (await castate.StateManager(path).repair_refs()).damaged

    found = modes(path)
    assert {"volumes", "locks", "quarantine", "refs.journal", "refs.snapshot", "castate.json"} <= set(found)
    assert any(name.startswith("quarantine/refs.journal.") for name in found)
    # 1 KiB volumes: every save started one, and clean-ups moved the live blobs on to newer ones
    assert any(
        name.startswith("volumes/") and name.endswith(".vol") and name != "volumes/00000001.vol" for name in found
    )
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (path / name).is_dir() else 0o600) and name != "."
    }
    assert wrong == {}
    assert stat.S_IMODE((tmp_path / "s.castate").stat().st_mode) == 0o600


@pytest.mark.usefixtures("open_umask")
async def test_a_sqlite_store_is_private(tmp_path: Path) -> None:
    """It was created with SQLite's default mode (0644 under the usual umask), -wal and -shm too."""
    async with castate.StateManager(open_backend(f"sqlite:///{tmp_path / 'state.db'}")) as sm:
        await sm.save_session("s", {"secret": "x" * 5000})
        await sm.gc(grace=0)
        found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert {"state.db", "state.db-wal", "state.db-shm", "state.db-gclock"} <= set(found)
    assert {name: oct(mode) for name, mode in found.items() if mode != 0o600} == {}


@pytest.mark.usefixtures("open_umask")
async def test_the_parent_directories_castate_creates_are_private_too(tmp_path: Path) -> None:
    """They were made 0777 under umask 000 (as ``mkdir -p`` does), the store itself 0700."""
    async with castate.StateManager(tmp_path / "a" / "b" / "store") as sm:
        await sm.save_session("s", {"secret": 1})
    for made in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "store"):
        assert oct(stat.S_IMODE(made.stat().st_mode)) == oct(0o700), made


async def test_a_store_others_can_open_is_used_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a private store opens without a word
        async with castate.StateManager(path) as sm:
            await sm.save_session("s", {"secret": 1})
    os.chmod(path, 0o777)
    os.chmod(path / "volumes", 0o755)
    with pytest.warns(castate.StoreWarning, match=r"open to other users.*0777.*volumes \(0755\).*chmod -R go-rwx"):
        async with castate.StateManager(path) as sm:
            assert await sm.load_session("s") == {"secret": 1}


async def save_and_check(path: Path) -> None:
    async with castate.StateManager(path) as sm:
        await sm.save_session("s", {"secret": 2})
        await sm.fsck()
        await sm.gc(grace=0)


@pytest.mark.parametrize("inside", ["volumes", "locks", "quarantine"])
async def test_a_directory_of_the_store_that_is_a_symlink_is_refused(tmp_path: Path, inside: str) -> None:
    path = tmp_path / "store"
    async with castate.StateManager(path) as sm:
        await sm.save_session("s", {"secret": 1})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = path / inside
    if target.exists():
        for child in target.iterdir():
            child.rename(outside / child.name)
        target.rmdir()
    target.symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    with pytest.raises(castate.CorruptFileError, match="a symlink"):
        await save_and_check(path)
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written outside the store


async def test_quarantine_made_a_symlink_after_open_is_refused(tmp_path: Path) -> None:
    """A repair keeps the damaged journal in quarantine/ first: never through a link made there."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    path = tmp_path / "store"
    async with castate.StateManager(castate.LocalBackend(path)) as sm:
        await sm.save_session("s", {"secret": 1})
        await sm.save_session("s", {"secret": 2})
        journal = path / "refs.journal"
        data = bytearray(journal.read_bytes())
        data[HEADER_SIZE + 20] ^= 0xFF
        journal.write_bytes(bytes(data))
        (path / "quarantine").symlink_to(outside)
        with pytest.raises(castate.CorruptFileError, match="a symlink"):
            await sm.repair_refs()
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("lock", ["gc.lock", "refs.lock", "gc.turnstile"])
async def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path, lock: str) -> None:
    path = tmp_path / "store"
    async with castate.StateManager(path) as sm:
        await sm.save_session("s", {"secret": 1})
    (path / "locks" / lock).unlink(missing_ok=True)
    victim = tmp_path / "victim"
    (path / "locks" / lock).symlink_to(victim)
    with pytest.raises(castate.StoreError, match="symlink"):
        await save_and_check(path)
    assert not victim.exists()  # the lock was not created outside the store
