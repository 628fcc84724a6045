"""The local backend passes the conformance suite, in pack mode and in loose mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from castate.backends import Backend, LocalBackend
from tests.backend_conformance import PersistentBackendConformance


class TestLocalPacked(PersistentBackendConformance):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    async def make_backend(self) -> Backend:
        return LocalBackend(self.path)

    async def reopen(self, backend: Backend) -> Backend:
        return LocalBackend(self.path)


class TestLocalLoose(TestLocalPacked):
    async def make_backend(self) -> Backend:
        return LocalBackend(self.path, loose=True)

    async def reopen(self, backend: Backend) -> Backend:
        return LocalBackend(self.path, loose=True)


class TestLocalRelaxed(TestLocalPacked):
    async def make_backend(self) -> Backend:
        return LocalBackend(self.path, durability="relaxed")
