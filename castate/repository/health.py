"""The store's maintenance record: the last runs of gc and fsck, kept in the store itself.

The record is a state like any other, saved under the ref ``meta/health``
(docs/format.md §2.4), so every backend keeps it, writes are atomic and a concurrent
writer is caught by compare-and-swap (the record is read again and the run added anew).
It holds the newest ``MAX_RUNS`` runs, oldest first; viewers (``castate ui``) read it
to show the last results and how the store's size went.
"""

from __future__ import annotations

import time
from typing import Any

from castate.errors import ConflictError, CorruptionError, UnsupportedFormatError
from castate.repository.fsck import FsckReport
from castate.repository.gc import GcReport
from castate.repository.repository import Repository

HEALTH_REF = "meta/health"
FORMAT = 1
MAX_RUNS = 200
ATTEMPTS = 8


def gc_run(report: GcReport, seconds: float) -> dict[str, Any]:
    """What the record keeps of a gc run."""
    return {
        "op": "gc",
        "time": time.time(),
        "seconds": round(seconds, 3),
        "ok": not report.warnings,
        "objects": report.objects,
        "object_bytes": report.object_bytes,
        "deleted": report.deleted,
        "deleted_bytes": report.deleted_bytes,
        "left": report.left,
        "reflog_expired": report.reflog_expired,
        "store_bytes_before": report.store_bytes_before,
        "store_bytes": report.store_bytes_after,
        "object_bytes_after": report.object_bytes - report.deleted_bytes,
        "warnings": report.warnings[:20],
    }


def fsck_run(report: FsckReport, seconds: float, store_bytes: int | None) -> dict[str, Any]:
    """What the record keeps of an fsck run."""
    return {
        "op": "fsck",
        "time": time.time(),
        "seconds": round(seconds, 3),
        "ok": report.ok,
        "full": report.full,
        "refs": report.refs,
        "reachable": report.reachable,
        "reachable_bytes": report.reachable_bytes,
        "logical_bytes": report.logical_bytes,
        "problems": len(report.problems) + len(report.stored_corrupt) + len(report.storage),
        "damaged_refs": sorted(report.damaged_refs)[:20],
        "quarantined": report.quarantined,
        "dangling": report.dangling if report.full else None,
        "store_bytes": store_bytes,
    }


async def record_run(repo: Repository, run: dict[str, Any]) -> None:
    """Add one run to the record (dropping the oldest past ``MAX_RUNS``)."""
    for _ in range(ATTEMPTS):
        try:
            runs = await read_runs(repo)
        except CorruptionError:
            runs = []  # a damaged record (fsck reported it) is replaced, not repaired
        runs = [*runs, run][-MAX_RUNS:]
        try:
            await repo.save(HEALTH_REF, {"format": FORMAT, "runs": runs}, message=f"record {run['op']}")
            return
        except ConflictError:
            continue  # another process recorded a run meanwhile: add ours to theirs
    raise ConflictError(f"{HEALTH_REF} kept moving during {ATTEMPTS} attempts to record a run", HEALTH_REF)


async def read_runs(repo: Repository) -> list[dict[str, Any]]:
    """The recorded runs, oldest first (empty when nothing was recorded)."""
    state = await repo.load(HEALTH_REF)
    if not isinstance(state, dict) or not isinstance(state.get("runs"), list):
        return []
    version = state.get("format")
    if not isinstance(version, int) or version > FORMAT:
        raise UnsupportedFormatError(f"{HEALTH_REF} has format {version!r}; this castate reads up to {FORMAT}")
    return [r for r in state["runs"] if isinstance(r, dict)]


__all__ = ["HEALTH_REF", "MAX_RUNS", "fsck_run", "gc_run", "read_runs", "record_run"]
