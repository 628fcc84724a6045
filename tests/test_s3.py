"""The S3 blob backend over real S3 servers (moto's, and SeaweedFS): the blob suite, the
object-level suite over a pack store, the conditional-write probe, the gc lease, and
several processes saving one session."""

from __future__ import annotations

import pytest

from castate.backends import Backend
from castate.backends.blob import BlobBackend
from castate.backends.s3 import S3Backend
from castate.repository.packs import PackStore
from castate.testing import PersistentBlobBackendTests
from tests.backend_conformance import PersistentBackendConformance


class TestS3Blobs(PersistentBlobBackendTests):
    @pytest.fixture(autouse=True)
    def _url(self, s3_url: str) -> None:
        self.url = s3_url  # a fresh key prefix per test

    async def make_backend(self) -> BlobBackend:
        return S3Backend(self.url)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return S3Backend(self.url)


class TestS3PackStore(PersistentBackendConformance):
    """The object-level contract, kept by the pack store on top of this backend."""

    @pytest.fixture(autouse=True)
    def _url(self, s3_url: str) -> None:
        self.url = s3_url

    async def make_backend(self) -> Backend:
        return PackStore(S3Backend(self.url))

    async def reopen(self, backend: Backend, **options: float) -> Backend:
        return PackStore(S3Backend(self.url, **options))  # type: ignore[arg-type]
