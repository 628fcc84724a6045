"""The gc-beside-writers test (tests/test_gc_concurrency.py, writers in tests/gc_writer.py) on
an encrypted store: made encrypted here first, the writers and gc then open it with the
CASTATE_KEY they inherit (tests/encrypted_support.py). The other reliability tests take the
encrypted case as a parameter of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

import castate
from tests import test_gc_concurrency
from tests.encrypted_support import env_key, is_encrypted, use_encryption
from tests.full_run import FULL


async def test_gc_is_safe_while_writers_save_on_an_encrypted_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, True)
    if not FULL:
        monkeypatch.setattr(test_gc_concurrency, "SECONDS", 3.0)  # each writer still runs 3 cycles
    store = tmp_path / "state"
    async with castate.StateManager(castate.Repository(castate.LocalBackend(store), key=env_key())):
        pass  # opened with a key: the new, empty store is encrypted now
    assert await is_encrypted(store)
    await test_gc_concurrency.test_gc_is_safe_while_writers_save(tmp_path)
    assert await is_encrypted(store)
