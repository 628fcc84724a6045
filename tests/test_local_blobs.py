"""The local directory store on the blob contract: the blob suite, the object suite over
PackStore, and what its files promise (volumes, places in the journal, gc giving space back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from castate.backends import Backend
from castate.backends.blob import BlobBackend
from castate.backends.local import LocalBackend
from castate.testing import PersistentBlobBackendTests
from tests.backend_conformance import PersistentBackendConformance


class TestLocalBlobs(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    async def make_backend(self) -> BlobBackend:
        return LocalBackend(self.path)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return LocalBackend(self.path)


class TestLocalBlobsRelaxed(TestLocalBlobs):
    async def make_backend(self) -> BlobBackend:
        return LocalBackend(self.path, durability="relaxed", volume_size=4096)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return LocalBackend(self.path, durability="relaxed", volume_size=4096)


class TestLocalPacks(PersistentBackendConformance):
    """The object-level suite over PackStore(LocalBackend)."""

    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    async def make_backend(self) -> Backend:
        from castate.repository.packs import PackStore

        return PackStore(LocalBackend(self.path))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        from castate.repository.packs import PackStore

        return PackStore(LocalBackend(self.path, **options))  # type: ignore[arg-type]
