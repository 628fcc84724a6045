"""When each ref last moved: the time a session's head changed (a save, but also a fork, a
restore or an import), which is what "last used" means for listings and retention.

A commit's own time is when its state was saved, which can be long before the ref moved to
it (a fork of an old checkpoint points at an old commit). The reflog records each move; a
ref whose reflog entries gc expired falls back to its commit's time, which is then older
than the expiry either way.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from castate.backends.base import ReflogEntry
from castate.repository import refs as names
from castate.repository.repository import Repository


async def moved_ns(
    repo: Repository, heads: dict[str, bytes], reflog: Sequence[ReflogEntry] | None = None
) -> dict[str, int]:
    """For each ref in ``heads`` (ref -> its commit), the time (ns) it last moved; ``reflog``
    when the caller read it already."""
    times = {ref: 0 for ref in heads}
    for entry in await repo.reflog() if reflog is None else reflog:
        if entry.name in times and entry.new is not None and entry.time_ns > times[entry.name]:
            times[entry.name] = entry.time_ns
    commits = await repo.read_commits(sorted(set(heads.values())))
    return {ref: max(times[ref], commits[cid].time_ns) for ref, cid in heads.items()}


async def session_moved_ns(
    repo: Repository, refs: Collection[str] | None = None, reflog: Sequence[ReflogEntry] | None = None
) -> dict[str, int]:
    """``moved_ns`` for the session heads named (all when None)."""
    heads = await repo.list_refs(names.SESSIONS)
    if refs is not None:
        heads = {r: c for r, c in heads.items() if r in refs}
    return await moved_ns(repo, heads, reflog)


__all__ = ["moved_ns", "session_moved_ns"]
