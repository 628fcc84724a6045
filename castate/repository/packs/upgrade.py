"""``castate upgrade``: move a format-1 store's objects (one frame per row or key) into packs.

Refs and the reflog keep their tables and keys between the formats, so only objects move.
Each object is verified against its id on the way; one that fails is kept aside as a
``quarantine/<id>`` blob instead of being packed, so the upgrade never loses or launders
damage. The format-1 objects are dropped only after every pack is durable, so an upgrade
stopped half way is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from castate.backends.blob import BlobBackend
from castate.codec.objects import decode_frame, encode_frame
from castate.errors import CorruptionError, UnsupportedFormatError
from castate.repository.packs.store import QUARANTINE_PREFIX, PackStore


@dataclass(slots=True)
class UpgradeReport:
    """What an upgrade found and did."""

    location: str
    legacy: int = 0  # format-1 objects found
    packed: int = 0  # objects written into packs (not counting those already there)
    damaged: list[str] = field(default_factory=list)  # ids kept aside as quarantine blobs


async def upgrade_store(blobs: BlobBackend, progress: Callable[[int, int], None] | None = None) -> UpgradeReport:
    """Pack every format-1 object of ``blobs``'s store, then drop them; a store with none is left alone."""
    store = PackStore(blobs, allow_legacy=True)
    await store.open()
    try:
        report = UpgradeReport(blobs.location, legacy=await blobs.legacy_objects())
        if not report.legacy:
            return report
        done = 0
        async for batch in blobs.iter_legacy_frames(1000):
            items: list[tuple[bytes, bytes]] = []
            aside: list[tuple[str, bytes]] = []
            for oid, frame in batch:
                try:
                    kind, content = decode_frame(oid, frame)
                except (CorruptionError, UnsupportedFormatError):
                    aside.append((QUARANTINE_PREFIX + oid.hex(), bytes(frame)))
                    report.damaged.append(oid.hex())
                    continue
                items.append((oid, encode_frame(kind, bytes(content), compress=False)))
            if aside:
                await blobs.put_blobs(aside)
            report.packed += await store.put_objects(items, stream="upgrade")
            done += len(batch)
            if progress is not None:
                progress(done, report.legacy)
        await blobs.drop_legacy()
        return report
    finally:
        await store.close()


__all__ = ["UpgradeReport", "upgrade_store"]
