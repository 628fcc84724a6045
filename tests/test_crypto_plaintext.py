"""An encrypted store's bytes hold none of the state's text: a marker saved as a session id,
a checkpoint name, metadata, a dict key and a value is searched for in every file of a local
store and of SQLite, every Redis key and value, every PostgreSQL row and every S3 object.
Each backend's plain store is scanned the same way first, to show the scan finds it there."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

import castate
from castate.backends.postgres import split_url
from castate.keys import RawKey
from tests.conftest import S3_BUCKET
from tools.servers import MotoServer, RedisServer

KEY = RawKey(os.urandom(32))


def marker() -> str:
    return "zq" + os.urandom(10).hex()


async def save(url: str, mark: str, key: RawKey | None) -> None:
    async with castate.StateManager(castate.open(url, key=key)) as sm:
        state = {mark: f"value {mark}", "nested": {"k": [mark] * 3}, "other": "x" * 1000}
        await sm.save_session(mark, state, metadata={"note": mark})
        await sm.create_checkpoint(mark, f"cp-{mark}", metadata={mark: mark})
        await sm.save_session(mark, {**state, "step": 2})
        await sm.save_session("plain-name", {"by": "another"})
    if key is not None:  # it reads back with the key
        async with castate.StateManager(castate.open(url, key=key)) as sm:
            assert (await sm.load_session(mark))[mark] == f"value {mark}"


def found_in(mark: str, chunks: list[bytes]) -> bool:
    needles = [mark.encode(), mark.encode().hex().encode(), mark.encode("utf-16-le")]
    return any(n in c for c in chunks for n in needles)


async def local_bytes(url: str) -> list[bytes]:
    return [p.read_bytes() for p in Path(url).rglob("*") if p.is_file()]


async def sqlite_bytes(url: str) -> list[bytes]:
    path = Path(url.removeprefix("sqlite:///"))
    return [p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)]


async def scan(backend: str, url: str, request: pytest.FixtureRequest) -> list[bytes]:
    if backend == "local":
        return await local_bytes(url)
    if backend == "sqlite":
        return await sqlite_bytes(url)
    if backend == "redis":
        return await redis_bytes(url, request.getfixturevalue("redis_server"))
    if backend == "postgres":
        return await postgres_bytes(url)
    return s3_bytes(url, request.getfixturevalue("moto_server"))


async def redis_bytes(url: str, server: RedisServer) -> list[bytes]:
    prefix = url.split("prefix=")[1]
    r = aioredis.Redis.from_url(server.url)
    out: list[bytes] = []
    try:
        async for key in r.scan_iter(match=prefix + "*"):
            out.append(key)
            kind = (await r.type(key)).decode()
            if kind == "string":
                out.append(await r.get(key))
            elif kind == "hash":
                out.extend(b for kv in (await r.hgetall(key)).items() for b in kv)
            elif kind == "zset":
                out.extend(m for m, _ in await r.zrange(key, 0, -1, withscores=True))
            elif kind == "stream":
                out.extend(b for _, fields in await r.xrange(key) for kv in fields.items() for b in kv)
            elif kind == "list":
                out.extend(await r.lrange(key, 0, -1))
            elif kind == "set":
                out.extend(await r.smembers(key))
            else:  # pragma: no cover - a new key type: the scan must learn it
                raise AssertionError(f"redis key {key!r} of type {kind}")
    finally:
        await r.aclose()
    assert out
    return out


async def postgres_bytes(url: str) -> list[bytes]:
    conninfo, schema = split_url(url)
    out: list[bytes] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        tables = await (
            await conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        ).fetchall()
        for (table,) in tables:
            rows = await (await conn.execute(f'SELECT * FROM "{schema}"."{table}"')).fetchall()
            for row in rows:
                for field in row:
                    out.append(bytes(field) if isinstance(field, bytes | memoryview) else str(field).encode())
    assert out
    return out


def s3_bytes(url: str, server: MotoServer) -> list[bytes]:
    prefix = url.split("/", 3)[3].split("?")[0] + "/"
    c = server.client()
    out: list[bytes] = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out.append(obj["Key"].encode())
            out.append(c.get_object(Bucket=S3_BUCKET, Key=obj["Key"])["Body"].read())
    assert out
    return out


def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    if backend == "local":
        return str(tmp_path / name)
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / name}.db"
    fixture = {"redis": "redis_url", "postgres": "postgres_url", "s3": "s3_url"}[backend]
    url: str = request.getfixturevalue(fixture)
    if backend == "postgres":
        return url + name  # the fixture's schema, and another for the second store
    if backend == "redis":
        return url[:-1] + name + ":"
    return url.replace("?", name + "?", 1)


@pytest.mark.parametrize("backend", ["local", "sqlite", "redis", "postgres", "s3"])
async def test_no_plaintext_in_an_encrypted_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    plain_mark, sealed_mark = marker(), marker()
    plain_url = store_url(backend, tmp_path, request, "plain")
    await save(plain_url, plain_mark, None)
    assert found_in(plain_mark, await scan(backend, plain_url, request))  # the scan sees a plain store's text

    sealed_url = store_url(backend, tmp_path, request, "sealed")
    await save(sealed_url, sealed_mark, KEY)
    chunks = await scan(backend, sealed_url, request)
    assert not found_in(sealed_mark, chunks)
    # nor the other session's name, nor metadata keys castate itself writes
    assert not found_in("plain-name", chunks)
    assert not found_in("another", chunks)
