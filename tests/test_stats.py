"""stats: counts, logical sizes computed once per object, dedup ratio, largest sessions."""

from __future__ import annotations

from pathlib import Path

import orjson

import castate
from castate.backends import MemoryBackend


async def test_logical_sizes_and_dedup() -> None:
    sm = castate.StateManager(MemoryBackend())
    doc = "x" * 100_000  # a chunked value
    state = {"doc": doc, "items": [f"item {i} " * 30 for i in range(500)]}
    await sm.save_session("big", state)
    for _ in range(9):
        await sm.create_checkpoint("big")
    await sm.save_session("small", {"a": 1})
    s = await sm.stats(top=1)
    assert (s.sessions, s.checkpoints, s.other_refs) == (2, 9, 0)
    json_size = len(orjson.dumps(state))
    head = s.largest[0]
    assert head.session == "big"
    assert len(s.largest) == 1
    # Logical size tracks the size of the value (within node overhead), counted per ref.
    assert 0.9 * json_size < head.head_bytes < 1.1 * json_size
    assert head.checkpoint_bytes == 9 * head.head_bytes
    assert s.logical_bytes >= 10 * head.head_bytes
    assert s.dedup_ratio > 9  # ten copies stored once (and the chunked doc dedups inside itself)
    assert s.reachable_objects == s.objects


async def test_stats_on_a_local_store_reports_disk_bytes(store_path: Path) -> None:
    async with castate.StateManager(castate.FileStorageBackend(store_path)) as sm:
        await sm.save_session("s", {"v": "y" * 5000})
        s = await sm.stats()
        assert s.disk_bytes is not None
        assert s.disk_bytes > 0
        assert s.backend["packs"] >= 1
