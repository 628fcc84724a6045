"""Hostile bundles (issue 16, items 5-7), each made here object by object: valid frames and
a valid trailer, so only the importer's own rules stand between them and the store.

- a few KiB that hold objects of many MiB each: memory stays within a batch plus one object;
- one object repeated: refused at the second copy, before any work on it;
- trees the reader would refuse (a commit whose root is a bytes value, a dict pointing at a
  commit, list nodes nested past the limit): refused before any ref moves, so the store's
  gc, fsck and loads go on as before.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import blake3
import orjson
import ormsgpack
import pytest
import zstandard

import castate
from castate.backends.sqlite import SQLiteBackend
from castate.codec import Commit, encode_commit, encode_frame, object_id
from castate.codec.encoder import MAX_DEPTH
from castate.codec.nodes import TAG_REF, encode_node
from castate.codec.objects import KIND_BYTES, KIND_COMMIT, KIND_DICT, KIND_LIST
from castate.errors import CorruptFileError
from castate.repository.bundle import HEADER, MAGIC, RECORD, TRAILER, TRAILER_MAGIC, WRITE_BATCH

Obj = tuple[bytes, bytes]  # (id, frame)


def obj(kind: int, content: bytes) -> Obj:
    return object_id(kind, content), encode_frame(kind, content, compress=True)


def commit(root: bytes) -> Obj:
    return obj(KIND_COMMIT, encode_commit(Commit(root, (), "s", 1, None, {})))


def node(kind: int, body: object, children: list[bytes]) -> Obj:
    return obj(kind, encode_node([(i, TAG_REF, c) for i, c in enumerate(children)], ormsgpack.packb(body)))


def bundle(path: Path, records: Iterable[Obj], head: bytes) -> Path:
    manifest = orjson.dumps(
        {"castate": "bundle", "version": 1, "created_ns": 1, "session": "s", "refs": {"sessions/s": head.hex()}},
        option=orjson.OPT_SORT_KEYS,
    )
    start = HEADER.pack(MAGIC, 1, len(manifest)) + manifest
    cobj = zstandard.ZstdCompressor(level=19).compressobj()
    ids = set()
    parts = []
    for oid, frame in records:
        parts.append(cobj.compress(RECORD.pack(oid, len(frame)) + frame))
        ids.add(oid)
    count = len(ids)  # distinct objects: what an importer that skips repeats counts
    body = b"".join(parts) + cobj.flush()
    path.write_bytes(start + body + TRAILER.pack(TRAILER_MAGIC, count, blake3.blake3(start + body).digest()))
    return path


async def refused(store: Path, path: Path, match: str) -> None:
    async with castate.StateManager(SQLiteBackend(store)) as sm:
        with pytest.raises(CorruptFileError, match=match):
            await sm.import_session(path)
        assert await sm.repository.list_refs() == {}
        assert await sm.load_session("s") is None
        await sm.save_session("t", {"after": True})
        await sm.gc(grace=0, reflog_expire=0)  # the store works on: nothing points at the refused objects
        assert (await sm.fsck()).ok
        assert await sm.load_session("t") == {"after": True}


async def test_memory_is_bounded_by_the_decompressed_size_of_what_an_import_holds(tmp_path: Path) -> None:
    """Objects of 16 MiB of zeros, a few KiB in the bundle: the importer batched by the
    compressed size and held all of them decompressed (a pack store wants raw frames)."""
    big = 16 << 20
    values = [obj(KIND_BYTES, bytes(big - 1) + bytes([i])) for i in range(16)]
    root = node(KIND_DICT, {f"v{i}": None for i in range(16)}, [oid for oid, _ in values])
    head = commit(root[0])
    path = bundle(tmp_path / "bomb.castate", [head, root, *values], head[0])
    assert path.stat().st_size < 4 << 10  # 1.1 KiB here
    value_ids = [oid for oid, _ in values]
    del values
    async with castate.StateManager(SQLiteBackend(tmp_path / "store.db")) as sm:
        tracemalloc.start()
        try:
            await sm.import_session(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        print(f"import of 16 objects of 16 MiB: peak {peak / 2**20:.0f} MiB traced")
        assert peak < 6 * big + WRITE_BATCH  # a few copies of one object; before the fix: all 256 MiB at once
        assert await sm.repository.head("sessions/s") == head[0]
        ids = {head[0], root[0], *value_ids}
        assert await sm.repository.backend.has_objects(ids) == ids


async def test_an_object_repeated_is_refused_at_its_second_copy(tmp_path: Path) -> None:
    leaf = node(KIND_DICT, {"a": 1}, [])
    head = commit(leaf[0])
    path = bundle(tmp_path / "flood.castate", [head, *[leaf] * 10_000], head[0])
    await refused(tmp_path / "store.db", path, "appears twice")


async def test_a_commit_whose_root_is_not_a_dict_is_refused(tmp_path: Path) -> None:
    blob = obj(KIND_BYTES, b"not a state")
    head = commit(blob[0])
    await refused(tmp_path / "store.db", bundle(tmp_path / "b.castate", [head, blob], head[0]), "a bytes object where")


async def test_a_dict_pointing_at_a_commit_is_refused(tmp_path: Path) -> None:
    leaf = node(KIND_DICT, {"a": 1}, [])
    inner = commit(leaf[0])
    root = node(KIND_DICT, {"c": None}, [inner[0]])
    head = commit(root[0])
    path = bundle(tmp_path / "b.castate", [head, root, inner, leaf], head[0])
    await refused(tmp_path / "store.db", path, "a commit object where")


async def test_list_nodes_nested_past_the_limit_are_refused(tmp_path: Path) -> None:
    chain = [node(KIND_LIST, [1], [])]
    for _ in range(MAX_DEPTH + 5):
        chain.append(node(KIND_LIST, [None], [chain[-1][0]]))
    root = node(KIND_DICT, {"deep": None}, [chain[-1][0]])
    head = commit(root[0])
    path = bundle(tmp_path / "deep.castate", [head, root, *reversed(chain)], head[0])
    await refused(tmp_path / "store.db", path, f"deeper than {MAX_DEPTH}")
