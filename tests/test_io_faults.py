"""A full or failing disk at every step of a save: the error is clear, nothing stored is lost,
and the next save works once the fault is gone.

The faults are injected at the local backend's OS seam (``castate/backends/local/osio.py``):
a dry run records every call one save-and-checkpoint makes, then each call in turn fails
with each fault that call can meet: ENOSPC and EIO, a failed fsync, a short write followed
by ENOSPC (a disk filling up mid-write), or a short write alone (which castate must finish).
Every fault is injected into an encrypted store too (tests/encrypted_support.py).
"""

from __future__ import annotations

import errno
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.backends.local import osio
from castate.errors import StoreError, StoreIOError
from tests.encrypted_support import ENCRYPTION, env_key, is_encrypted, use_encryption

SEAM = ("open_fd", "write", "fsync", "fdatasync", "replace", "link", "unlink", "mkdir")
FAULTS: dict[str, list[str]] = {
    "open_fd": ["ENOSPC", "EIO"],
    "write": ["ENOSPC", "EIO", "short+ENOSPC", "short"],
    "fsync": ["EIO"],
    "fdatasync": ["EIO"],
    "replace": ["EIO"],
    "link": ["ENOSPC", "EIO"],
    "unlink": ["EIO"],
    "mkdir": ["ENOSPC"],
}


def state(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "messages": [{"i": i, "text": f"message {i} " * 30} for i in range(10 + step * 5)],
        "doc": f"document at step {step} " * 200,
        "raw": bytes([step]) * 5000,
    }


@dataclass
class Fault:
    name: str
    occurrence: int  # the n-th call (0-based) of ``name`` fails
    kind: str


class Seam:
    """Wraps the osio calls: records them, and makes one of them fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.fault: Fault | None = None
        self.injected: str | None = None
        self._short_pending = False
        for name in SEAM:
            monkeypatch.setattr(osio, name, self._wrap(name, getattr(osio, name)))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            n = self.calls.count(name)
            self.calls.append(name)
            if self._short_pending and name == "write":
                self._short_pending = False
                raise OSError(errno.ENOSPC, "No space left on device")
            if self.fault is not None and self.fault.name == name and self.fault.occurrence == n:
                kind = self.fault.kind
                self.injected = f"{name}:{kind}"
                if kind.startswith("short"):
                    fd, data = args
                    view = memoryview(data)
                    self._short_pending = kind == "short+ENOSPC"
                    return real(fd, view[: max(1, len(view) // 3)])
                # As the real calls do, an error of a call on a path names the path.
                path = args[0] if isinstance(args[0], str | Path) else None
                raise OSError(getattr(errno, kind), f"injected {kind}", *([str(path)] if path else []))
            return real(*args, **kwargs)

        return call

    @contextmanager
    def failing(self, fault: Fault | None) -> Iterator[None]:
        self.calls, self.fault, self.injected, self._short_pending = [], fault, None, False
        try:
            yield
        finally:
            self.fault = None
            self._short_pending = False


def manager(path: Path) -> castate.StateManager:
    return castate.StateManager(castate.Repository(castate.LocalBackend(path), key=env_key()))  # CASTATE_KEY


async def make_base(path: Path, torn_journal: bool) -> str:
    async with manager(path) as sm:
        await sm.save_session("s", state(1))
        cp = await sm.create_checkpoint("s", "one")
        await sm.save_session("other", {"unrelated": True})
    if torn_journal:  # a writer died mid-append: the next ref update rewrites the journal
        with open(path / "refs.journal", "ab") as f:
            f.write(b"CREF\x40\x00\x00\x00partial")
    return cp


async def save_and_checkpoint(sm: castate.StateManager, step: int, done: list[str]) -> None:
    """The operation under test; ``done`` lists the calls that returned."""
    await sm.save_session("s", state(step))
    done.append("save")
    await sm.create_checkpoint("s", f"cp{step}", metadata={"step": step})
    done.append("checkpoint")


async def check_store(path: Path, cp: str, head: dict[str, Any], checkpoints: set[str]) -> None:
    """In a fresh manager: no damage, the old checkpoint and the other session intact, the
    session at ``head`` with exactly ``checkpoints``."""
    async with manager(path) as sm:
        report = await sm.fsck(full=True, quarantine=False)
        assert report.ok, (report.problems[:2], report.stored_corrupt[:2], report.storage)
        assert await sm.restore_checkpoint(cp) == state(1)
        assert await sm.load_session("other") == {"unrelated": True}
        assert await sm.load_session("s") == head
        assert {c.name for c in await sm.list_checkpoints("s")} == checkpoints


@ENCRYPTION
@pytest.mark.parametrize("torn_journal", [False, True], ids=["local", "local-torn-journal"])
async def test_every_fault_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn_journal: bool, encrypted: bool
) -> None:
    use_encryption(monkeypatch, encrypted)
    # Commit ids hold the commit time; a fixed clock makes every run write the same objects,
    # so every run makes the same calls.
    monkeypatch.setattr(time, "time_ns", lambda: 1_800_000_000_000_000_000)
    template = tmp_path / "template"
    cp = await make_base(template, torn_journal)
    assert await is_encrypted(template) == encrypted
    seam = Seam(monkeypatch)

    # Dry run: the calls one save and one checkpoint make.
    dry = tmp_path / "dry"
    shutil.copytree(template, dry)
    sm = manager(dry)
    await sm.repository.open()
    with seam.failing(None):
        await save_and_checkpoint(sm, 2, [])
    calls = list(seam.calls)
    await sm.close()
    assert {"write", "fdatasync", "open_fd"} <= set(calls)

    outcomes: dict[str, int] = {}
    for index, name in enumerate(calls):
        occurrence = calls[:index].count(name)
        for kind in FAULTS[name]:
            path = tmp_path / f"run-{index}-{kind}"
            shutil.copytree(template, path)
            sm = manager(path)
            await sm.repository.open()
            done: list[str] = []
            try:
                error: StoreIOError | None = None
                with seam.failing(Fault(name, occurrence, kind)):
                    try:
                        await save_and_checkpoint(sm, 2, done)
                    except StoreIOError as exc:
                        error = exc
                if error is not None:
                    assert error.errno == (errno.ENOSPC if "ENOSPC" in kind else errno.EIO), error
                    assert isinstance(error, StoreError)
                    assert error.filename, f"{error} names no file"
                    assert str(path) in error.filename, f"{error} does not name the file"
                assert seam.injected == f"{name}:{kind}"
                if kind == "short":
                    assert done == ["save", "checkpoint"], "a short write alone must not fail a save"
                key = f"{name}:{kind} -> " + (
                    "ok" if len(done) == 2 else "checkpoint failed" if done else "save failed"
                )
                outcomes[key] = outcomes.get(key, 0) + 1
                await check_store(
                    path,
                    cp,
                    state(2) if "save" in done else state(1),
                    {"one", "cp2"} if "checkpoint" in done else {"one"},
                )
                # The same manager works once the fault is gone.
                if "save" not in done:
                    await sm.save_session("s", state(2))
                if "checkpoint" not in done:
                    await sm.create_checkpoint("s", "cp2", metadata={"step": 2})
                await sm.save_session("s", state(3))
            finally:
                await sm.close()
            await check_store(path, cp, state(3), {"one", "cp2"})
    print(f"\n{len(calls)} calls; faults: {dict(sorted(outcomes.items()))}")
    assert any(k.endswith("save failed") for k in outcomes)


def fail_calls(monkeypatch: pytest.MonkeyPatch, plan: dict[str, list[int]]) -> dict[str, int]:
    """Make the listed occurrences (0-based, counted from now) of seam calls fail with EIO."""
    counts = dict.fromkeys(plan, 0)
    for name, which in plan.items():
        real = getattr(osio, name)

        def call(*args: Any, _name: str = name, _real: Callable[..., Any] = real, _which: list[int] = which) -> Any:
            n = counts[_name]
            counts[_name] += 1
            if n in _which:
                raise OSError(errno.EIO, f"injected EIO in {_name}")
            return _real(*args)

        monkeypatch.setattr(osio, name, call)
    return counts


async def test_when_the_journal_cannot_be_undone_the_error_says_so_and_saves_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    cp = await make_base(path, torn_journal=False)
    sm = manager(path)
    await sm.repository.open()
    try:
        await sm.save_session("s", state(2))  # the volume exists: a save opens it, then the journal
        with monkeypatch.context() as m:
            # fdatasync #1 (the journal's) fails, and so does the rewrite that would undo the
            # record (open_fd #2: its temporary file).
            fail_calls(m, {"fdatasync": [1], "open_fd": [2]})
            with pytest.raises(StoreIOError, match="could not be made durable nor undone"):
                await sm.save_session("s", state(3))
        # The record is whole in the file: the refs show it (not durable, but not torn either).
        assert await manager(path).load_session("s") == state(3)
        # This manager must not hold on to the head it had before: its next save works.
        await sm.save_session("s", state(4))
    finally:
        await sm.close()
    async with manager(path) as sm2:
        assert await sm2.load_session("s") == state(4)
        assert await sm2.restore_checkpoint(cp) == state(1)
        assert (await sm2.fsck(full=True, quarantine=False)).ok


async def test_a_record_whose_fdatasync_failed_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fdatasync the kernel may drop the record's pages: the next save must not
    deduplicate against it, or a later acknowledged save could point at data that never reached the disk."""
    path = tmp_path / "store"
    await make_base(path, torn_journal=False)
    repo = castate.Repository(castate.LocalBackend(path))
    await repo.open()
    try:
        with monkeypatch.context() as m:
            fail_calls(m, {"fdatasync": [0]})
            with pytest.raises(StoreIOError):
                await repo.save("sessions/s", state(7))
        assert [i async for i in repo.backend.iter_objects()]
        result = await repo.save("sessions/s", state(7))
        assert result.objects_written > 1  # the state's objects again, not only the commit
    finally:
        await repo.close()


async def test_a_volume_whose_header_cannot_be_written_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    await make_base(path, torn_journal=False)
    before = set((path / "volumes").iterdir())
    sm = castate.StateManager(castate.Repository(castate.LocalBackend(path, volume_size=1)))  # a new volume per save
    try:
        with monkeypatch.context() as m:
            fail_calls(m, {"write": [0]})  # the new volume's header
            with pytest.raises(StoreIOError) as info:
                await sm.save_session("s", state(2))
        assert info.value.filename.endswith(".vol")
        assert set((path / "volumes").iterdir()) == before
        await sm.save_session("s", state(2))
        assert len(set((path / "volumes").iterdir())) == len(before) + 1
    finally:
        await sm.close()
