"""The blob backend contract: named immutable blobs, and refs that move only by compare-and-swap.

This is all a storage engine has to provide for castate's v2 format (docs/format.md §6):
the repository's pack store (``castate.repository.packs``) writes one immutable *pack*
blob per save and moves refs, and knows everything about what the bytes mean. A blob
backend knows bytes, names and atomic ref moves, never the format, in the way restic's
backends store named files for its repository.

Every method that touches storage is async and batch-shaped: a save is one ``commit``
call (one round trip or one worker-thread hop), a read of many blobs one ``get_blobs``.
"""

from __future__ import annotations

import abc
import contextlib
import re
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass

from castate.backends.base import ANY, ReflogEntry, RefRepairReport, RefUpdate, _Any
from castate.errors import ConflictError, NotFoundError
from castate.keys import Secret

# Blob names are short ASCII paths the pack store makes, such as ``packs/<64 hex digits>``.
BLOB_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*")
MAX_BLOB_NAME = 256


def check_blob_name(name: str) -> None:
    """Blob names come from the pack store; anything else is a programming error."""
    if len(name) > MAX_BLOB_NAME or not BLOB_NAME.fullmatch(name):
        raise ValueError(f"bad blob name {name[:80]!r}")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob's name, size in bytes and write time (ns since the epoch, on ``now_ns``'s clock)."""

    name: str
    size: int
    time_ns: int


class BlobBackend(abc.ABC):
    """Abstract blob backend: memory, SQLite, PostgreSQL, Redis (and object storage next).

    Promises every implementation keeps (``castate.testing.BlobBackendTests`` checks them):

    - A blob, once ``put_blobs`` or ``commit`` returned, is durable and immutable. Writing a
      name that exists is a no-op (the pack store names blobs by their content's hash).
    - ``commit`` makes its blobs durable before any ref moves, and moves all refs or none.
    - A ref changes only by compare-and-swap; every change is appended to the reflog.
    - ``gc_exclusive`` excludes, in every process, every ``gc_shared`` holder and every
      ``commit`` that stores blobs or has checks (a save); a commit that only moves refs may
      proceed (gc moves a ref itself while it holds the lock).
    """

    #: A short description for messages: the file, URL or "memory".
    location: str = ""
    #: The key an encrypted store is opened with (``castate.open(url, key=...)``); the
    #: repository's pack store reads it, the backend never does.
    secret: Secret | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create what the backend needs; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, connections and threads."""

    # -- blobs ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        """The bytes of the blobs that exist among ``names`` (missing names are absent)."""

    @abc.abstractmethod
    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """For each (name, offset, length), the blob's bytes from ``offset`` for at most
        ``length`` bytes (fewer at the blob's end), or None when the blob does not exist."""

    @abc.abstractmethod
    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        """Every blob whose name starts with ``prefix``, in name order."""

    @abc.abstractmethod
    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store blobs durably, create-only (a name that exists is left as it is); returns how many were new."""

    @abc.abstractmethod
    async def delete_blobs(self, names: Collection[str]) -> int:
        """Remove blobs; returns how many existed. Only gc and fsck call this."""

    # -- refs -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        """Current targets of the refs that exist among ``names``."""

    @abc.abstractmethod
    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        """Every ref whose name starts with ``prefix``, with its target."""

    async def get_ref(self, name: str) -> bytes | None:
        return (await self.get_refs((name,))).get(name)

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        """Apply all updates atomically, or none: ConflictError if any expectation fails."""
        await self.commit((), updates, message=message)

    @abc.abstractmethod
    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        """Store ``blobs`` (create-only) durably, then apply ``updates`` atomically; returns how
        many blobs were new.

        ``checks`` names refs that must hold the given value (None: absent) for the updates to
        apply; they are compared, never written nor logged. When a check or an update's
        expectation fails, raise ConflictError naming the ref: no ref changed, and the blobs
        may or may not be stored (garbage for gc either way). Each applied change is appended
        to the reflog with ``message``.
        """

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        """Point ``target`` at ``source``'s value; returns it. NotFoundError without ``source``.

        Backends whose engine can read and write in one step override this."""
        for _ in range(16):
            value = await self.get_ref(source)
            if value is None:
                raise NotFoundError(f"no ref {source}")
            try:
                await self.commit((), [RefUpdate(target, value, expected)], message=message, checks={source: value})
            except ConflictError as exc:
                if exc.ref == source:
                    continue  # the source moved between the read and the write: read it again
                raise
            return value
        raise ConflictError(f"ref {source} kept moving while it was copied", source)

    @abc.abstractmethod
    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        """The recorded changes of one ref (or of all refs), oldest first."""

    @abc.abstractmethod
    async def expire_reflog(self, before_ns: int) -> int:
        """Forget reflog entries older than ``before_ns`` (refs stay); returns how many went."""

    # -- maintenance ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        """Held by gc while it deletes; excludes ``gc_shared`` and every commit that stores blobs
        or has checks, in every process.

        The default suits backends used by one process only (memory)."""
        yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """The shared side of ``gc_exclusive``, for a writer whose checks and ref moves span
        several calls (an import). Hold it briefly: gc waits for it."""
        yield

    async def now_ns(self) -> int:
        """The time (ns since the epoch) on the clock that stamps blobs and reflog entries."""
        return time.time_ns()

    async def reclaim(self) -> None:  # noqa: B027 - optional hook
        """Give the space of deleted blobs back to the file system, where the engine keeps it
        (SQLite's free pages); gc calls it after deleting."""

    async def check_storage(self) -> list[str]:
        """Damage the backend found in its own files or tables, one line per problem."""
        return []

    async def repair_refs(self) -> RefRepairReport:
        """Rebuild refs and reflog from what is intact; transactional engines have nothing to do."""
        return RefRepairReport(self.location, damaged=False)

    async def stats(self) -> dict[str, int]:
        """Numbers for reports: ``blobs`` and ``blob_bytes`` at least, and the store's size on
        disk as ``bytes_allocated`` / ``bytes_apparent`` (files) or ``store_bytes`` (servers)."""
        infos = await self.list_blobs()
        return {"blobs": len(infos), "blob_bytes": sum(i.size for i in infos)}

    # -- format-1 stores -----------------------------------------------------------------------

    async def legacy_objects(self) -> int:
        """How many objects of a format-1 store (one frame per object) this store still holds;
        the pack store refuses to open while any remain (``castate upgrade`` moves them)."""
        return 0

    def iter_legacy_frames(self, batch: int = 1000) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """The (id, frame) pairs of a format-1 store, ``batch`` at a time."""
        return _no_frames()

    async def drop_legacy(self) -> None:  # noqa: B027 - optional hook
        """Remove the format-1 objects once ``castate upgrade`` has copied them into packs."""


async def _no_frames() -> AsyncIterator[list[tuple[bytes, bytes]]]:
    return
    yield  # pragma: no cover - makes this an async generator


__all__ = ["ANY", "BlobBackend", "BlobInfo", "RefUpdate", "check_blob_name"]
