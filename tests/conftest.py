"""Shared fixtures: fresh stores in temporary directories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import castate


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def manager(store_path: Path) -> AsyncIterator[castate.StateManager]:
    sm = castate.StateManager(castate.FileStorageBackend(store_path))
    yield sm
    await sm.close()


@pytest.fixture
async def repo(store_path: Path) -> AsyncIterator[castate.Repository]:
    r = castate.Repository(castate.LocalBackend(store_path))
    await r.open()
    yield r
    await r.close()
