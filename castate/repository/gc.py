"""Garbage collection: free the objects nothing needs any more, safely while others write.

**Mark.** Everything reachable (``walk.Walker``) from every ref, from both ends of each
reflog entry younger than the reflog expiry (so ``forget``, ``rm`` and ``restore`` stay
undoable for that long), and from every object younger than the grace period (so a tree
a writer is still building keeps what it points at, as git does for recent objects).

**Sweep.** Objects that are unmarked and older than the grace period. Before deleting, gc
takes ``backend.gc_exclusive()``: no save can then be between its dedup check and its
ref move, so re-marking from the refs and reflog as they are now catches every save that
finished since the first mark (it found old objects present and did not write them
again). Saves wait while gc deletes and then write whatever they need that is gone.

Old reflog entries are expired first, so a gc stopped half way never leaves reflog
entries that point at deleted objects. A reachable object that is missing or corrupt
stops gc before it deletes anything: run fsck first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from castate.backends.base import Backend, ObjectInfo
from castate.errors import CorruptionError
from castate.repository.walk import Problem, Walker

DEFAULT_GRACE = 3600.0  # seconds
DEFAULT_REFLOG_EXPIRE = 7 * 86400.0  # seconds

#: progress(phase, done, total): phases "list", "mark", "delete"; total None when unknown.
GcProgress = Callable[[str, int, int | None], None]


@dataclass(slots=True)
class GcReport:
    """What gc found and did. Bytes are object sizes as the backend stores them."""

    dry_run: bool
    grace: float
    reflog_expire: float
    objects: int = 0
    object_bytes: int = 0
    reachable: int = 0  # from refs and recent reflog entries
    recent: int = 0  # kept for the grace period: young objects, what they point at, saves made during gc
    candidates: int = 0  # unreachable and older than the grace period
    deleted: int = 0
    deleted_bytes: int = 0
    left: int = 0  # candidates the backend could not delete yet (e.g. in a live writer's pack)
    reflog_expired: int = 0
    recent_incomplete: int = 0  # objects below recent unreferenced objects that are gone already
    store_bytes_before: int | None = None
    store_bytes_after: int | None = None
    warnings: list[str] = field(default_factory=list)


async def collect_garbage(
    backend: Backend,
    *,
    grace: float = DEFAULT_GRACE,
    reflog_expire: float = DEFAULT_REFLOG_EXPIRE,
    dry_run: bool = False,
    progress: GcProgress | None = None,
) -> GcReport:
    """Run one gc over ``backend``; see the module docstring. Raises CorruptionError when
    a reachable object is missing or corrupt (nothing is deleted then)."""
    if grace < 0 or reflog_expire < 0:
        raise ValueError("grace and reflog_expire must not be negative")
    report = GcReport(dry_run=dry_run, grace=grace, reflog_expire=reflog_expire)
    now = await backend.now_ns()
    object_cutoff = now - int(grace * 1e9)
    log_cutoff = now - int(reflog_expire * 1e9)
    report.store_bytes_before = _disk_bytes(await backend.stats())
    if not dry_run:
        report.reflog_expired = await backend.expire_reflog(log_cutoff)

    infos: dict[bytes, ObjectInfo] = {}
    async for info in backend.iter_objects():
        infos[info.id] = info
        if progress is not None and len(infos) % 4096 == 0:
            progress("list", len(infos), None)
    report.objects = len(infos)
    report.object_bytes = sum(i.size for i in infos.values())
    if progress is not None:
        progress("list", len(infos), len(infos))

    walker = Walker(backend, fetch_chunks=False, progress=(lambda n: progress("mark", n, None)) if progress else None)
    await _mark_refs(backend, walker, log_cutoff, report)
    report.reachable = sum(1 for oid in infos if oid in walker.seen)
    young = [oid for oid, i in infos.items() if i.time_ns >= object_cutoff and oid not in walker.seen]
    before = len(walker.problems)
    await walker.walk(young)
    # Unreferenced and partly collected: a copy of garbage that survived in a pack its
    # writer still held while the rest of its tree went. Not damage: nothing refers to it,
    # and a save that needs it again writes its whole tree (dedup is per object).
    report.recent_incomplete = len(walker.problems) - before

    if dry_run:
        doomed = _doomed(infos, walker.seen, object_cutoff)
        _count(report, doomed)
        report.deleted = len(doomed)
        report.deleted_bytes = sum(infos[o].size for o in doomed)
        return report

    async with backend.gc_exclusive():
        await _mark_refs(backend, walker, log_cutoff, report)  # saves that finished since the first mark
        doomed = _doomed(infos, walker.seen, object_cutoff)
        if progress is not None:
            progress("delete", 0, len(doomed))
        if doomed:
            await backend.delete_objects(doomed)
        if progress is not None:
            progress("delete", len(doomed), len(doomed))
        await backend.maintain()
    await backend.reclaim()  # after letting writers go on: a vacuum may take a while
    left = await backend.has_objects(doomed) if doomed else set()
    _count(report, doomed)
    report.left = len(left)
    report.deleted = len(doomed) - len(left)
    report.deleted_bytes = sum(infos[o].size for o in doomed if o not in left)
    report.store_bytes_after = _disk_bytes(await backend.stats())
    return report


async def _mark_refs(backend: Backend, walker: Walker, log_cutoff: int, report: GcReport) -> None:
    """Mark from every ref (damage here stops gc) and from young reflog entries."""
    refs = await backend.list_refs()
    before = dict(walker.problems)
    await walker.walk(refs.values())
    damage = [p for oid, p in walker.problems.items() if oid not in before]
    if damage:
        first = damage[0]
        raise CorruptionError(
            f"gc stopped before deleting anything: {len(damage)} reachable object(s) missing or corrupt, "
            f"first {first.id.hex()} ({first.what}: {first.detail}); run `castate fsck`"
        )
    ends = {c for e in await backend.reflog() if e.time_ns >= log_cutoff for c in (e.old, e.new) if c is not None}
    before = dict(walker.problems)
    await walker.walk(ends)
    _note(report, walker.problems, before, "in the reflog's history")


def _note(report: GcReport, problems: dict[bytes, Problem], before: dict[bytes, Problem], where: str) -> None:
    for oid, p in problems.items():
        if oid not in before:
            report.warnings.append(f"{p.what} object {oid.hex()} {where}: {p.detail}")


def _doomed(infos: dict[bytes, ObjectInfo], seen: set[bytes], cutoff: int) -> list[bytes]:
    return [oid for oid, i in infos.items() if oid not in seen and i.time_ns < cutoff]


def _count(report: GcReport, doomed: list[bytes]) -> None:
    report.candidates = len(doomed)
    report.recent = report.objects - report.reachable - len(doomed)


def _disk_bytes(stats: dict[str, int]) -> int | None:
    for key in ("bytes_allocated", "bytes_on_disk", "bytes_apparent", "store_bytes"):
        if key in stats:
            return stats[key]
    return None


__all__ = ["DEFAULT_GRACE", "DEFAULT_REFLOG_EXPIRE", "GcReport", "collect_garbage"]
