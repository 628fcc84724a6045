"""fsck: check that every ref leads to complete, intact data.

Quick mode (the default) reads every object reachable from a ref, verifies it against its
id, parses it (node bodies, commits, text), and checks each child is of a kind allowed
where it sits. Full mode then also verifies every stored object that no ref reaches and
counts those as dangling (``gc`` removes them). Corrupt objects are moved to the
backend's quarantine, never deleted, so a later save of the same content writes a good
copy again. Missing objects are reported with the refs that lead to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from castate.backends.base import Backend
from castate.codec.decoder import Content
from castate.errors import CorruptionError, UnsupportedFormatError
from castate.repository.stats import logical_sizes, own_size
from castate.repository.walk import BATCH, Problem, Walker, ancestors, get_frames, links

#: progress(phase, done, total): phases "refs" and "stored"; total None when unknown.
FsckProgress = Callable[[str, int, int | None], None]


@dataclass(slots=True)
class FsckReport:
    full: bool
    refs: int = 0
    reachable: int = 0
    reachable_bytes: int = 0  # frames of the reachable objects that were read
    logical_bytes: int = 0  # every ref's state as a full copy (castate.repository.stats)
    stored_checked: int = 0
    problems: list[Problem] = field(default_factory=list)  # reachable objects missing or corrupt
    damaged_refs: dict[str, list[str]] = field(default_factory=dict)  # ref -> ids of bad objects under it
    stored_corrupt: list[Problem] = field(default_factory=list)  # unreachable stored objects that fail (full)
    dangling: int = 0
    dangling_bytes: int = 0
    quarantined: int = 0
    storage: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # not damage: e.g. the run could not be recorded

    @property
    def ok(self) -> bool:
        return not (self.problems or self.stored_corrupt or self.storage)


async def fsck(
    backend: Backend,
    *,
    full: bool = False,
    quarantine: bool = True,
    progress: FsckProgress | None = None,
) -> FsckReport:
    report = FsckReport(full=full)
    report.storage = await backend.check_storage()
    refs = await backend.list_refs()
    report.refs = len(refs)
    walker = Walker(
        backend,
        deep=True,
        record_children=True,
        progress=(lambda n: progress("refs", n, None)) if progress else None,
    )
    children = walker.children
    assert children is not None
    own: dict[bytes, int] = {}

    def visit(oid: bytes, kind: int, frame: bytes | memoryview, content: Content) -> None:
        report.reachable_bytes += len(frame)
        own[oid] = own_size(kind, content, len(children.get(oid, ())))

    walker.on_object = visit
    await walker.walk(refs.values())
    report.reachable = len(walker.seen)
    sizes = logical_sizes(own, children)
    report.logical_bytes = sum(sizes.get(cid, 0) for cid in refs.values())
    report.problems = sorted(walker.problems.values(), key=lambda p: p.id)
    if walker.problems:
        assert walker.children is not None
        bad = ancestors(walker.children, walker.problems)
        for name, cid in sorted(refs.items()):
            if cid in bad:
                under = ancestors_below(walker.children, cid, set(walker.problems))
                report.damaged_refs[name] = sorted(o.hex() for o in under)

    if full:
        stored = [info async for info in backend.iter_objects()]
        todo = [i for i in stored if i.id not in walker.seen]
        report.stored_checked = len(stored) - len(todo)
        for start in range(0, len(todo), BATCH):
            part = todo[start : start + BATCH]
            frames, unreadable = await get_frames(backend, [i.id for i in part])
            for info in part:
                if info.id in unreadable:
                    report.stored_corrupt.append(Problem(info.id, "corrupt", unreadable[info.id], None))
                    continue
                frame = frames.get(info.id)
                if frame is None:
                    continue  # removed meanwhile (gc)
                try:
                    kind, content = backend.ids.decode_frame(info.id, frame)
                    links(info.id, kind, content, deep=True)
                except (CorruptionError, UnsupportedFormatError) as exc:
                    report.stored_corrupt.append(Problem(info.id, "corrupt", str(exc), None))
                    continue
                report.dangling += 1
                report.dangling_bytes += info.size
            report.stored_checked += len(part)
            if progress is not None:
                progress("stored", report.stored_checked, len(stored))

    corrupt = [p.id for p in report.problems if p.what == "corrupt"] + [p.id for p in report.stored_corrupt]
    if quarantine and corrupt:
        report.quarantined = await backend.quarantine_objects(corrupt)
    return report


def ancestors_below(children: dict[bytes, list[bytes]], top: bytes, bad: set[bytes]) -> set[bytes]:
    """The bad objects in the tree under ``top``."""
    out: set[bytes] = set()
    seen: set[bytes] = set()
    stack = [top]
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if oid in bad:
            out.add(oid)
        stack.extend(children.get(oid, ()))
    return out


__all__ = ["FsckReport", "fsck"]
