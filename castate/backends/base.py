"""The storage backend contract: bytes by key, and refs that move only by compare-and-swap.

A backend never sees JSON state. It stores *frames* (the encoded form of one object,
see ``castate.codec.objects``) under their 32-byte ids, and *refs*: names that point at
a commit id. Every method that touches storage is async and batch-shaped, so a
save or a tree level of a restore costs one round trip (or one worker-thread hop),
not one per object.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal

from castate.codec.objects import PLAIN, Ids


class _Any:
    """Sentinel type: a ref update that does not check the current value."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()

# The durability setting of the stores on disk (local directory, SQLite): "durable" syncs each
# write, "relaxed" skips that (a machine crash may lose recent saves; docs/backends.md). Named
# here, at the contract, so the layers above need not import a concrete backend for it.
Durability = Literal["durable", "relaxed"]


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """Move ``name`` to ``new`` (None deletes) if it currently is ``expected`` (None: absent)."""

    name: str
    new: bytes | None
    expected: bytes | _Any | None = ANY


@dataclass(frozen=True, slots=True)
class ReflogEntry:
    """One change of one ref, as recorded when it happened."""

    name: str
    old: bytes | None
    new: bytes | None
    time_ns: int
    message: str


@dataclass(slots=True)
class RefRepairReport:
    """What rebuilding a damaged ref store found, kept and lost (``Backend.repair_refs``)."""

    location: str
    damaged: bool  # False: nothing needed repair
    kept: int = 0  # intact records (ref change groups) kept
    damaged_spans: list[tuple[int, int]] = field(default_factory=list)  # byte ranges that held no intact record
    lost_records: int = 0  # records known lost (gaps in their sequence numbers)
    # refs a lost record moved, as later records show: ref -> (target before, target restored)
    inferred: dict[str, tuple[bytes | None, bytes | None]] = field(default_factory=dict)
    maybe_lost: list[str] = field(default_factory=list)  # refs the unreadable bytes seem to name
    refs: int = 0  # refs after the repair
    saved_as: str | None = None  # where the damaged original was kept
    blobs_found: int = 0  # blobs a lost record had placed, found intact again (the local store's volumes)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's id, stored size and write time (for gc's grace period)."""

    id: bytes
    size: int
    time_ns: int


class Backend(abc.ABC):
    """Abstract storage backend. Subclasses: memory, local directory, and (later) servers."""

    #: True when the backend compresses batches itself and wants raw (uncompressed) frames.
    packs_objects: ClassVar[bool] = False
    #: A short description for messages, e.g. the directory or URL.
    location: str = ""
    #: How this store's object ids are computed (keyed in an encrypted store, known once open).
    ids: Ids = PLAIN

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create what the backend needs; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, connections and threads."""

    # -- objects ------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        """Frames of the objects that exist among ``ids`` (missing ids are simply absent)."""

    @abc.abstractmethod
    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        """The subset of ``ids`` that exist."""

    @abc.abstractmethod
    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        """Store (id, frame) pairs durably, skipping ids that exist; returns how many were new.

        ``stream`` is a hint that successive batches belong together (one session), which
        lets a packing backend compress a batch against the previous one.
        """

    @abc.abstractmethod
    async def delete_objects(self, ids: Collection[bytes]) -> int:
        """Remove objects; returns how many existed. Only gc calls this."""

    @abc.abstractmethod
    def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every stored object with its size and write time (for gc and fsck)."""

    # -- refs ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        """Current targets of the refs that exist among ``names``."""

    @abc.abstractmethod
    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        """Every ref whose name starts with ``prefix``, with its target."""

    @abc.abstractmethod
    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        """Apply all updates atomically, or none: raise ConflictError if any expectation fails.

        Each applied change is appended to the reflog with ``message``.
        """

    @abc.abstractmethod
    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        """The recorded changes of one ref (or of all refs), oldest first."""

    # -- combined -------------------------------------------------------------------------

    async def commit(
        self,
        items: Sequence[tuple[bytes, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        stream: str = "",
        history: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        """Store objects, then move refs: the objects are durable before any ref points at them.

        ``history`` holds more objects, the small ones that reading a history needs without the
        state (commits): a backend that compresses by stream keeps them in a stream of their
        own, so a log reads them without decompressing states; the others store them like
        ``items``.
        """
        items = [*items, *history]
        written = await self.put_objects(items, stream=stream) if items else 0
        if updates:
            await self.update_refs(updates, message=message)
        return written

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        """Point ``target`` at ``source``'s commit (O(1)); returns it. NotFoundError without ``source``.

        Backends override this to read and write in one step.
        """
        from castate.errors import NotFoundError

        value = await self.get_ref(source)
        if value is None:
            raise NotFoundError(f"no ref {source}")
        await self.update_refs([RefUpdate(target, value, expected)], message=message)
        return value

    async def get_ref(self, name: str) -> bytes | None:
        return (await self.get_refs((name,))).get(name)

    # -- maintenance ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        """Held by gc while it deletes. ``commit`` holds the shared side from its dedup check
        to its ref move, so no save can come to depend on an object gc is deleting.

        The default suits backends used by one process only (memory)."""
        yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """The shared side of ``gc_exclusive``, for a writer whose dedup checks and ref moves
        span several calls (an import): objects it found present stay until it leaves.

        Hold it briefly: gc waits for it. The default suits backends used by one process
        only (memory)."""
        yield

    async def now_ns(self) -> int:
        """The time (ns since the epoch) on the clock that stamps this backend's objects and reflog.

        gc measures its grace period and the reflog's age on this clock, so a gc on a machine
        whose clock is off never treats a fresh object as old. Server backends ask the server."""
        return time.time_ns()

    async def maintain(self) -> None:  # noqa: B027 - optional hook
        """Reorganise storage without changing what it holds (merge small packs); gc calls it
        while it holds ``gc_exclusive``."""

    async def reclaim(self) -> None:  # noqa: B027 - optional hook
        """Give the space of deleted objects back to the file system where the engine keeps it;
        gc calls it after it has let writers go on."""

    async def check_storage(self) -> list[str]:
        """Damage the backend found in its own files or tables (not objects: fsck reads those),
        one line per problem. The default has nothing to check."""
        return []

    async def repair_refs(self) -> RefRepairReport:
        """Rebuild the store's refs and reflog from whatever of them is intact, keeping the
        damaged original aside; works on a store too damaged to open. Stores whose refs live
        in a transactional database have nothing to rebuild: the default reports no damage."""
        return RefRepairReport(self.location, damaged=False)

    @abc.abstractmethod
    async def expire_reflog(self, before_ns: int) -> int:
        """Forget reflog entries older than ``before_ns`` (refs stay); returns how many went."""

    @abc.abstractmethod
    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        """Move objects out of the store into a quarantine area (kept for inspection, never
        read as data again); returns how many were moved. fsck uses it for corrupt objects."""

    async def stats(self) -> dict[str, int]:
        """Backend-specific numbers (objects, bytes on disk, files...) for reports."""
        count = size = 0
        async for info in self.iter_objects():
            count += 1
            size += info.size
        return {"objects": count, "object_bytes": size}


# A checkpoint ref holds two user names of up to 1024 bytes each, percent-encoded (up to
# three characters a byte): 12 + 3072 + 1 + 3072 + 1 + 33 characters.
MAX_REF_NAME = 8192


def check_ref_name(name: str) -> None:
    """Ref names are built by the repository; anything else is a programming error."""
    if not name or len(name) > MAX_REF_NAME or not name.isascii() or not name.isprintable():
        raise ValueError(f"bad ref name {name[:80]!r}")


def plan_ref_updates(
    current: dict[str, bytes], updates: Sequence[RefUpdate]
) -> list[tuple[str, bytes | None, bytes | None]]:
    """Check every expectation against ``current``; (name, old, new) per change, or ConflictError.

    Several updates of one name apply in order, each seeing the previous one's result.
    """
    from castate.errors import ConflictError

    view: dict[str, bytes | None] = {}
    changes: list[tuple[str, bytes | None, bytes | None]] = []
    for u in updates:
        check_ref_name(u.name)
        old = view[u.name] if u.name in view else current.get(u.name)
        if not isinstance(u.expected, _Any) and u.expected != old:
            want = "absent" if u.expected is None else u.expected.hex()[:12]
            have = "absent" if old is None else old.hex()[:12]
            raise ConflictError(f"ref {u.name} is {have}, expected {want}: another writer moved it", u.name)
        view[u.name] = u.new
        changes.append((u.name, old, u.new))
    return changes
