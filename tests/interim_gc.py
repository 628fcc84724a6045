"""A stand-in for castate's gc, written against the backend contract only, for the shared-store tests.

INTERIM: castate/repository/gc.py (issue 3) is the real gc. When it lands, the tests that
import ``collect_garbage`` from here should call it instead, and this file goes.

Mark everything reachable from the refs (commits: root and parents; value objects: their
children), then, holding ``gc_exclusive``, mark again from the refs that moved meanwhile
and delete the unmarked objects that were older than the grace period when listed. A
save that finished before the lock has moved its ref (so the second mark sees it); a save
after the lock re-checks for the deleted objects and writes them again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from castate.backends.base import Backend
from castate.codec import child_ids, decode_frame, parse_commit
from castate.codec.objects import KIND_COMMIT


async def mark(backend: Backend, roots: Iterable[bytes], marked: set[bytes]) -> None:
    """Add to ``marked`` every object reachable from ``roots``, one batch per level."""
    frontier = list(dict.fromkeys(r for r in roots if r not in marked))
    while frontier:
        got = await backend.get_objects(frontier)
        marked.update(frontier)
        nxt: dict[bytes, None] = {}
        for oid, frame in got.items():
            kind, content = decode_frame(oid, frame)
            if kind == KIND_COMMIT:
                commit = parse_commit(oid, content)
                children = [commit.root, *commit.parents]
            else:
                children = child_ids(oid, kind, content)
            for child in children:
                if child not in marked:
                    nxt[child] = None
        frontier = list(nxt)


async def reachable(backend: Backend, prefix: str = "") -> set[bytes]:
    marked: set[bytes] = set()
    await mark(backend, (await backend.list_refs(prefix)).values(), marked)
    return marked


async def collect_garbage(backend: Backend, grace_s: float) -> int:
    """Delete unreachable objects older than ``grace_s`` seconds; returns how many went."""
    cutoff = time.time_ns() - int(grace_s * 1e9)
    candidates = [info.id async for info in backend.iter_objects() if info.time_ns < cutoff]
    marked: set[bytes] = set()
    await mark(backend, (await backend.list_refs()).values(), marked)
    async with backend.gc_exclusive():
        await mark(backend, (await backend.list_refs()).values(), marked)
        doomed = [oid for oid in candidates if oid not in marked]
        return await backend.delete_objects(doomed) if doomed else 0
