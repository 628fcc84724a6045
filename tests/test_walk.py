"""The reachability walker: each object once, commits lead to roots (not parents), damage is
recorded with who pointed at it, batches stay bounded."""

from __future__ import annotations

from collections.abc import Collection

import castate
from castate.codec.encoder import MAX_DEPTH
from castate.codec.objects import KIND_COMMIT, encode_frame
from castate.repository.snapshot import fetch_tree
from castate.repository.walk import Walker
from tests.memory_objects import MemoryObjects
from tests.test_codec_decoder import deep_chain


class Recording(MemoryObjects):
    def __init__(self) -> None:
        super().__init__()
        self.requested: list[int] = []

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        self.requested.append(len(ids))
        return await super().get_objects(ids)


async def test_walk_visits_each_object_once_and_skips_parents() -> None:
    backend = Recording()
    repo = castate.Repository(backend)
    first = await repo.save("sessions/a", {"items": [f"item {i} " * 40 for i in range(300)]})
    second = await repo.save("sessions/a", {"items": [f"item {i} " * 40 for i in range(301)]})
    other = await repo.save("sessions/b", {"items": [f"item {i} " * 40 for i in range(300)]})
    visited: list[bytes] = []
    walker = Walker(backend, on_object=lambda oid, kind, frame, content: visited.append(oid), batch=50)
    backend.requested.clear()
    await walker.walk([second.commit, other.commit])
    tree = set(await fetch_tree(backend, second.root)) | set(await fetch_tree(backend, other.root))
    assert len(visited) == len(set(visited))
    assert set(visited) == tree | {second.commit, other.commit}
    assert first.commit not in walker.seen  # a parent is history, not reachability
    assert max(backend.requested) <= 50
    assert walker.kinds[second.commit] == KIND_COMMIT
    assert await walker.walk([other.commit]) == 0


async def test_walk_records_missing_and_corrupt_objects_with_their_parent() -> None:
    backend = MemoryObjects()
    repo = castate.Repository(backend)
    saved = await repo.save("sessions/a", {"a": "x" * 5000, "b": "y" * 5000})
    a_id, b_id = sorted(set(await fetch_tree(backend, saved.root)) - {saved.root})
    await backend.delete_objects([a_id])
    frame, t = backend._objects[b_id]
    backend._objects[b_id] = (frame[:-1] + bytes([frame[-1] ^ 0x55]), t)
    walker = Walker(backend, deep=True, record_children=True)
    await walker.walk([saved.commit])
    assert {oid: (p.what, p.parent) for oid, p in walker.problems.items()} == {
        a_id: ("missing", saved.root),
        b_id: ("corrupt", saved.root),
    }
    assert walker.children is not None
    assert sorted(walker.children[saved.root]) == [a_id, b_id]


async def test_walk_reports_nodes_nested_deeper_than_castate_writes() -> None:
    """Such a tree cannot be loaded (the decoder refuses it), so fsck must say so too."""
    backend = MemoryObjects()
    await backend.open()
    for depth, problems in ((MAX_DEPTH - 1, 0), (MAX_DEPTH + 5, 1)):
        root, objects = deep_chain(depth)
        await backend.put_objects([(oid, encode_frame(kind, content)) for oid, (kind, content) in objects.items()])
        walker = Walker(backend, deep=True)
        await walker.walk([root])
        assert len(walker.problems) == problems
        assert all("nested deeper" in p.detail for p in walker.problems.values())
