"""Shared fixtures: fresh stores in temporary directories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import castate
from tools.servers import MotoServer, PostgresServer, RedisServer, SeaweedServer


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


# -- servers: real PostgreSQL and Redis, one throwaway instance each per test session --------------
# A test that needs a server and cannot start or reach it fails (never skips).


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A URL of a fresh, empty castate store (its own schema) on the session's PostgreSQL."""
    return f"{postgres_server.url}?schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL of a fresh, empty castate store (its own key prefix) on the session's Redis."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


# -- S3: moto's server (fast, for the conformance suite) and SeaweedFS (a real object store, for
# the racing and crash tests), one each per test session, with test credentials in the
# environment (worker processes inherit them). Buckets are made here; castate never makes one.

S3_BUCKET = "castate-tests"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        server.create_bucket(S3_BUCKET)
        yield server


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        server.create_bucket(S3_BUCKET)
        yield server


@pytest.fixture
def s3_url(moto_server: MotoServer) -> str:
    """A URL of a fresh, empty castate store (its own key prefix) on the session's moto server."""
    return moto_server.url(S3_BUCKET, f"t{uuid.uuid4().hex[:12]}") + "&save_window=0.3&gc_lease=5"


@pytest.fixture
def seaweed_url(seaweed_server: SeaweedServer) -> str:
    """A URL of a fresh, empty castate store on the session's SeaweedFS."""
    return seaweed_server.url(S3_BUCKET, f"t{uuid.uuid4().hex[:12]}") + "&save_window=0.3&gc_lease=5"
