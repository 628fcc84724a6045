"""The blob backend conformance suite (castate.testing) over ``SealedBlobs`` wrapping every
backend: an encrypted store keeps the blob contract its engines keep, on every engine.

Where an encrypted store legitimately differs (its sealed ref names are longer than the
names given, so the longest names an engine holds are shorter), the test says so and checks
what the encrypted store promises instead (tests/test_crypto_sealed.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from castate.backends.base import MAX_REF_NAME, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.local import LocalBackend
from castate.backends.memory import MemoryBackend
from castate.backends.postgres import PostgresBackend
from castate.backends.redis import RedisBackend
from castate.backends.s3 import S3Backend
from castate.backends.sqlite import SQLiteBackend
from castate.errors import InvalidKeyError
from castate.repository.crypto.sealed import SealedBlobs
from castate.repository.crypto.slots import StoreKeys
from castate.testing import PRINTABLE, BlobBackendTests, PersistentBlobBackendTests, value


def sealed(inner: BlobBackend, master: bytes) -> SealedBlobs:
    return SealedBlobs(inner, StoreKeys.derive(master, "0" * 32, "0" * 16))


# -- where an encrypted store differs ------------------------------------------------------------

LONGEST_SESSION = quote("é" * 512, safe="")  # 1,024 bytes of UTF-8, castate's longest session id
LONGEST_CHECKPOINT = f"checkpoints/{LONGEST_SESSION}/{LONGEST_SESSION}/20261205T110000.000000Z-abcdef"


async def _longest_names(backend: BlobBackend) -> None:
    """An encrypted name is longer than the name given (each part gains 16 bytes and base64's
    third), so the contract's longest names (MAX_REF_NAME printable characters) do not fit once
    encrypted. They are refused with ValueError, changing nothing; the longest names castate
    makes (1 KiB session ids and checkpoint names of non-ASCII text) fit, or, where an engine's
    index cannot hold an incompressible name (PostgreSQL's btree), are InvalidKeyError."""
    name = ("r/" + PRINTABLE * (MAX_REF_NAME // len(PRINTABLE) + 1))[:MAX_REF_NAME]
    with pytest.raises(ValueError, match=r"ref name.*once encrypted"):
        await backend.update_refs([RefUpdate(name, value(1), None)], message="longest")
    assert await backend.list_refs() == {}
    assert await backend.reflog() == []
    for i, ours in enumerate(["sessions/" + LONGEST_SESSION, LONGEST_CHECKPOINT]):
        try:
            await backend.update_refs([RefUpdate(ours, value(i), None)], message="ours")
        except InvalidKeyError:
            assert await backend.get_ref(ours) is None
            continue
        assert await backend.get_ref(ours) == value(i)
        assert await backend.list_refs(ours[:100]) == {ours: value(i)}
        assert [e.name for e in await backend.reflog(ours)] == [ours]
    await backend.update_refs([RefUpdate("r/after", value(2), None)])  # and the store goes on
    assert await backend.get_ref("r/after") == value(2)


class _Differs:
    async def test_the_longest_ref_names(self, backend: BlobBackend) -> None:
        await _longest_names(backend)

    async def test_an_incompressible_longest_ref_name(self, backend: BlobBackend) -> None:
        await _longest_names(backend)


class TestSealedMemory(_Differs, BlobBackendTests):
    async def make_backend(self) -> BlobBackend:
        return sealed(MemoryBackend(), os.urandom(32))


class _Persistent(_Differs, PersistentBlobBackendTests):
    """One master key per test: a reopened backend reads what the first one sealed."""

    master = b""

    @pytest.fixture(autouse=True)
    def _master(self) -> None:
        self.master = os.urandom(32)

    def inner(self) -> BlobBackend:  # pragma: no cover - overridden
        raise NotImplementedError

    async def make_backend(self) -> BlobBackend:
        return sealed(self.inner(), self.master)

    async def reopen(self, backend: BlobBackend) -> BlobBackend:
        return sealed(self.inner(), self.master)


class TestSealedLocal(_Persistent):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store"

    def inner(self) -> BlobBackend:
        return LocalBackend(self.path)


class TestSealedSQLite(_Persistent):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    def inner(self) -> BlobBackend:
        return SQLiteBackend(self.path)


class TestSealedPostgres(_Persistent):
    @pytest.fixture(autouse=True)
    def _url(self, postgres_url: str) -> None:
        self.url = postgres_url

    def inner(self) -> BlobBackend:
        return PostgresBackend(self.url)


class TestSealedRedis(_Persistent):
    @pytest.fixture(autouse=True)
    def _url(self, redis_url: str) -> None:
        self.url = redis_url

    def inner(self) -> BlobBackend:
        return RedisBackend(self.url)


class TestSealedS3(_Persistent):
    @pytest.fixture(autouse=True)
    def _url(self, s3_url: str) -> None:
        self.url = s3_url

    def inner(self) -> BlobBackend:
        return S3Backend(self.url)
