"""An encrypted store damaged below its backend's own checks: a byte flipped, a blob cut short,
emptied or deleted in the database rows themselves (SQLite keeps no checksum of its own), in
every blob the store holds (packs, index segments, key slots). Reads never return wrong data
and never crash: they raise CorruptObjectError naming an object of the damaged pack's chain,
CorruptFileError naming the blob (an index segment, a key slot), a clear key error (a key
slot), or read what they need intact from elsewhere, and a full fsck reports the damage."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Awaitable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

import castate
from castate.backends.sqlite import SQLiteBackend
from castate.errors import (
    CastateError,
    CorruptFileError,
    CorruptObjectError,
    KeyRequiredError,
    MissingObjectError,
    WrongKeyError,
)
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, RawKey
from castate.repository.packs import PackStore

KEY = RawKey("d4" * 32)
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_PASSWORD, ENV_KEY, ENV_KEY_FILE):
        monkeypatch.delenv(name, raising=False)


def make_state(step: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"message {i} " * 25} for i in range(step * 30)],
        "doc": "long document " * 400 + str(step),
        "step": step,
    }


def manager(path: Path) -> castate.StateManager:
    return castate.StateManager(castate.Repository(SQLiteBackend(path), key=KEY))


async def build(path: Path) -> tuple[dict[str, Any], str, dict[str, set[str]]]:
    """The store, its head and last checkpoint, and the objects of each pack's chain, by blob."""
    sm = manager(path)
    for step in range(1, 7):
        await sm.save_session("s", make_state(step))
        cp = await sm.create_checkpoint("s", f"step{step}")
        if step == 3:
            await sm.gc(grace=0)  # rewrites chains and merges index segments
    await sm.close()
    sm = manager(path)
    await sm.repository.open()
    store = sm.repository.backend
    assert isinstance(store, PackStore)
    by_chain: dict[bytes, set[str]] = {}
    pack_chain: dict[str, bytes] = {}
    for pack, oid, _, _ in store._cat.entries():
        by_chain.setdefault(pack.chain, set()).add(oid.hex())
        pack_chain["packs/" + pack.name] = pack.chain
    await sm.close()
    return make_state(6), cp, {blob: by_chain[chain] for blob, chain in pack_chain.items()}


def rows(path: Path) -> dict[str, bytes]:
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT name, data FROM blobs"))


def put_row(path: Path, name: str, data: bytes | None) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        if data is None:
            conn.execute("DELETE FROM blobs WHERE name = ?", (name,))
        else:
            conn.execute("UPDATE blobs SET data = ?, size = ? WHERE name = ?", (data, len(data), name))


def damages(data: bytes, rng: random.Random) -> list[tuple[str, bytes | None]]:
    def flip(pos: int) -> bytes:
        out = bytearray(data)
        out[pos] ^= 1 << rng.randrange(8)
        return bytes(out)

    n = len(data)
    return [
        ("magic", flip(0)),
        ("nonce", flip(4 + rng.randrange(12))),
        ("ciphertext", flip(16 + rng.randrange(max(n - 32, 1)))),
        ("tag", flip(n - 1 - rng.randrange(16))),
        ("truncated", data[: n // 2]),
        ("emptied", b""),
        ("deleted", None),
    ]


async def read_back(path: Path, cp: str) -> tuple[Any, Any]:
    sm = manager(path)
    try:
        return await sm.load_session("s"), await sm.restore_checkpoint(cp)
    finally:
        await sm.close()


async def attempt(call: Awaitable[T]) -> T | CastateError:
    try:
        return await call
    except CastateError as exc:
        return exc


async def fsck(path: Path) -> castate.CastateError | Any:
    sm = manager(path)
    try:
        return await sm.fsck(full=True, quarantine=False)
    except CastateError as exc:
        return exc
    finally:
        await sm.close()


def named(exc: CastateError, blob: str, objects: set[str]) -> bool:
    if isinstance(exc, CorruptObjectError | MissingObjectError):
        return exc.object_id in objects
    if isinstance(exc, CorruptFileError):
        return blob in exc.path or blob in str(exc) or (blob.startswith("keys/") and exc.path == "keys/")
    if isinstance(exc, WrongKeyError | KeyRequiredError):
        return blob.startswith("keys/")  # the master key is in the damaged slot
    return False


async def test_every_damage_to_every_encrypted_blob_is_named(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    expected, cp, objects = await build(path)
    pristine = rows(path)
    assert {n.split("/")[0] for n in pristine} == {"keys", "packs", "index"}
    rng = random.Random(21)
    outcomes: Counter[str] = Counter()
    # Every key slot and index segment, and packs of every chain (the first and last of each).
    chosen = {n for n in pristine if not n.startswith("packs/")}
    for chain in {frozenset(o) for o in objects.values()}:
        packs = sorted(n for n in pristine if n in objects and frozenset(objects[n]) == chain)
        chosen |= {packs[0], packs[-1]}
    for blob, data in sorted((n, pristine[n]) for n in chosen):
        kind = blob.split("/")[0]
        for label, content in damages(data, rng):
            put_row(path, blob, content)
            try:
                read = await attempt(read_back(path, cp))
                if isinstance(read, CastateError):
                    assert named(read, blob, objects.get(blob, set())), f"{blob} {label}: {read!r}"
                    outcomes[f"{kind} {label}: {type(read).__name__}"] += 1
                    report = await fsck(path)
                    if not isinstance(report, CastateError):
                        assert not report.ok, f"fsck missed {blob} {label}"
                else:
                    head, old = read
                    assert head == expected, f"wrong data after {blob} {label}"
                    assert old == expected
                    outcomes[f"{kind} {label}: intact"] += 1
                    report = await fsck(path)
                    if isinstance(report, CastateError):
                        assert named(report, blob, objects.get(blob, set())), report
                    elif kind != "keys":  # a slot is not data: damage to it only shows on open
                        assert not report.ok, f"fsck missed {blob} {label}"
            finally:
                with closing(sqlite3.connect(path)) as conn, conn:
                    conn.execute("DELETE FROM blobs WHERE name = ?", (blob,))
                    conn.execute(
                        "INSERT INTO blobs (name, size, time_ns, data) VALUES (?, ?, 1, ?)", (blob, len(data), data)
                    )
    print("\n" + "\n".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    assert await read_back(path, cp) == (expected, expected)
