"""Shared stores under load: 4 processes save into one PostgreSQL (one Redis, one S3) store while gc runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest

import castate
from castate.backends.base import Backend
from castate.backends.urls import open_backend
from castate.repository.gc import collect_garbage
from castate.repository.packs import PackStore
from castate.repository.walk import Walker
from tests.shared_worker import digest

ROOT = Path(__file__).resolve().parents[1]


async def reachable(backend: Backend, *prefixes: str) -> set[bytes]:
    """Every object the refs under ``prefixes`` (default: all refs) reach (castate's own walker)."""
    walker = Walker(backend)
    for prefix in prefixes or ("",):
        await walker.walk((await backend.list_refs(prefix)).values())
    assert not walker.problems
    return walker.seen


WORKERS = 4
STEPS = 30


async def _run_workers_while_gc(url: str, tmp_path: Path) -> tuple[dict[str, str], int, int]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.shared_worker",
            url,
            str(w),
            str(STEPS),
            str(tmp_path / f"w{w}.json"),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for w in range(WORKERS)
    ]
    waits = [asyncio.create_task(p.communicate()) for p in procs]
    backend = PackStore(open_backend(url, create=True))  # type: ignore[arg-type]
    await backend.open()
    passes = deleted = 0
    try:
        while not all(w.done() for w in waits):
            deleted += (await collect_garbage(backend, grace=0.05, reflog_expire=0)).deleted
            passes += 1
            await asyncio.sleep(0.05)
    finally:
        await backend.close()
    for proc, w in zip(procs, waits, strict=True):
        _, err = await w
        assert proc.returncode == 0, err.decode()
    promised: dict[str, str] = {}
    for w in range(WORKERS):
        promised.update(orjson.loads((tmp_path / f"w{w}.json").read_bytes()))
    return promised, passes, deleted


@pytest.mark.parametrize("kind", ["postgres", "redis", "seaweed"])
async def test_four_workers_share_one_store_while_gc_runs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{kind}_url")
    promised, passes, deleted = await _run_workers_while_gc(url, tmp_path)
    assert passes >= 3, "gc must have run while the workers saved"
    assert deleted > 0, "gc must have collected the deleted scratch sessions' objects"
    assert len(promised) == WORKERS * (STEPS // 3 + 1)

    async with castate.StateManager(url) as sm:
        for key, want in promised.items():
            if key.startswith("session:"):
                state = await sm.load_session(key.removeprefix("session:"))
            else:
                state = await sm.restore_checkpoint(key)
            assert digest(state) == want, key
        assert {s.session_id for s in await sm.list_sessions()} == {f"worker-{w}" for w in range(WORKERS)}

        backend = sm.repository.backend
        await collect_garbage(backend, grace=0, reflog_expire=0)  # no writers now: only what refs reach stays
        everything = await reachable(backend)
        per_worker = [
            await reachable(backend, f"sessions/worker-{w}", f"checkpoints/worker-{w}/") for w in range(WORKERS)
        ]
        stats = await backend.stats()
        assert stats["objects"] == len(everything)
        # dedup across workers: the shared document and prompt are stored once, not once per worker
        assert stats["objects"] < sum(len(s) for s in per_worker)
        shared = set.intersection(*per_worker)
        assert len(shared) >= 5
        sizes = {i.id: i.size async for i in backend.iter_objects()}
        shared_bytes = sum(sizes[i] for i in shared)
        assert stats["object_bytes"] <= sum(sum(sizes[i] for i in s) for s in per_worker) - 3 * shared_bytes


@pytest.mark.parametrize("engine", ["postgres", "redis"])
async def test_gc_gives_space_back_and_reports_it(engine: str, request: pytest.FixtureRequest) -> None:
    """`castate gc` on a server store: the space of what it deleted comes back (PostgreSQL: its
    reclaim compacts the mostly-free blobs table) and its report says so, before and after."""
    import os
    import random

    url = request.getfixturevalue(f"{engine}_url")
    kept = {"blob": random.Random(1).randbytes(50_000)}  # stored out of line (TOAST), after the others
    async with castate.StateManager(url) as sm:
        for i in range(5):
            await sm.save_session("drop", {"blob": os.urandom(300_000), "i": i})
        await sm.save_session("keep", kept)  # after them: a plain vacuum finds no empty end to cut off
        await sm.delete_session("drop")
        report = await sm.gc(grace=0, reflog_expire=0)
        assert report.deleted > 0
        assert report.store_bytes_before is not None
        assert report.store_bytes_after is not None
        assert report.store_bytes_after < report.store_bytes_before - 1_000_000
        assert report.store_bytes_after == (await sm.repository.backend.stats())["store_bytes"]
        assert await sm.load_session("keep") == kept
