"""Recovering refs from the reflog: move a ref whose data is damaged back to its newest
earlier target whose data is complete.

fsck names the refs whose commit or tree has a missing or corrupt object. Each such ref's
reflog lists the targets it had before; the newest one whose whole tree verifies becomes
the ref's target again, by compare-and-swap, with a reflog entry that records the damaged
target (so ``castate restore`` of that commit undoes the roll-back once the data is back).
A ref with no intact earlier target (a checkpoint has only its creation) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from castate.backends.base import Backend, RefUpdate
from castate.codec.objects import KIND_COMMIT
from castate.errors import ConflictError
from castate.repository.repository import Repository
from castate.repository.walk import Walker


@dataclass(frozen=True, slots=True)
class Rollback:
    """One damaged ref: the target it had, and the target it was moved back to (None: none intact)."""

    ref: str
    damaged: bytes
    restored: bytes | None
    skipped: int  # earlier targets that were damaged too


async def intact(backend: Backend, commit: bytes) -> bool:
    """Whether ``commit`` and every object of its tree exist and verify."""
    walker = Walker(backend, deep=True)
    await walker.walk([commit], frozenset((KIND_COMMIT,)))
    return not walker.problems


async def roll_back(repo: Repository, refs: Iterable[str]) -> list[Rollback]:
    """Move each of ``refs`` back to the newest intact target its reflog knows; see the module doc."""
    backend = (await repo.open()).backend
    out = []
    for ref in sorted(set(refs)):
        current = await backend.get_ref(ref)
        if current is None:
            continue
        candidates: list[bytes] = []
        for entry in reversed(await backend.reflog(ref)):
            for cid in (entry.new, entry.old):
                if cid is not None and cid != current and cid not in candidates:
                    candidates.append(cid)
        restored = None
        skipped = 0
        try:
            # Checked and moved under one hold of gc's shared lock: a gc between the check and
            # the move could otherwise collect the unreferenced tree just found intact.
            async with backend.gc_shared():
                for cid in candidates:
                    if await intact(backend, cid):
                        restored = cid
                        break
                    skipped += 1
                if restored is not None:
                    await repo.update_refs(
                        [RefUpdate(ref, restored, current)],
                        message=f"repair: back from damaged {current.hex()[:12]}",
                    )
        except ConflictError:
            continue  # another writer moved it meanwhile: its new target is not this damage
        out.append(Rollback(ref, current, restored, skipped))
    return out


__all__ = ["Rollback", "intact", "roll_back"]
