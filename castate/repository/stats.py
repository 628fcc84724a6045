"""Store statistics: objects and bytes stored, the logical size of every head and checkpoint,
and how much deduplication saves.

The *logical size* of a state is about what a full copy would hold: the JSON of its inline
values plus the length of every string and bytes value, counted as often as the state
holds them. It is computed once per object id (a subtree shared by many checkpoints is
sized once), so stats reads each reachable object once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from castate.backends.base import Backend
from castate.codec.decoder import Content
from castate.codec.objects import KIND_BYTES, KIND_CHUNK, KIND_DICT, KIND_LIST, KIND_STR
from castate.repository import refs as names
from castate.repository.walk import Walker

REF_SPECIAL = 37  # bytes a ref entry takes in a node's specials table
BYTES_SPECIAL = 9  # bytes a raw entry takes besides its payload


@dataclass(slots=True)
class SessionSize:
    session: str
    head_bytes: int  # logical size of the head
    checkpoints: int
    checkpoint_bytes: int  # logical size of all its checkpoints together


@dataclass(slots=True)
class StoreStats:
    objects: int = 0
    object_bytes: int = 0  # sizes of stored objects, as the backend reports them
    reachable_objects: int = 0
    reachable_bytes: int = 0
    sessions: int = 0
    checkpoints: int = 0
    other_refs: int = 0
    logical_bytes: int = 0  # every head and checkpoint (and other ref) counted as a full copy
    backend: dict[str, int] = field(default_factory=dict)  # the backend's own numbers (files, disk bytes...)
    largest: list[SessionSize] = field(default_factory=list)

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes over the bytes of the objects that hold them."""
        return self.logical_bytes / self.reachable_bytes if self.reachable_bytes else 0.0

    @property
    def disk_bytes(self) -> int | None:
        for key in ("bytes_allocated", "bytes_on_disk", "bytes_apparent", "store_bytes"):
            if key in self.backend:
                return self.backend[key]
        return None


def own_size(kind: int, content: Content, n_children: int) -> int:
    """The logical bytes an object holds itself, apart from its children."""
    if kind in (KIND_STR, KIND_BYTES, KIND_CHUNK):
        return len(content)
    if kind in (KIND_DICT, KIND_LIST):
        # The node's bytes, less the table of ids that stand for its children.
        return max(len(content) - 4 - REF_SPECIAL * n_children, 0)
    return 0  # index, chunk list, commit: only their children hold values


async def store_stats(
    backend: Backend, *, top: int = 10, progress: Callable[[str, int, int | None], None] | None = None
) -> StoreStats:
    out = StoreStats()
    out.backend = await backend.stats()
    async for info in backend.iter_objects():
        out.objects += 1
        out.object_bytes += info.size
    refs = await backend.list_refs()
    own: dict[bytes, int] = {}
    frame_bytes = 0
    walker = Walker(
        backend,
        record_children=True,
        progress=(lambda n: progress("refs", n, None)) if progress else None,
    )
    children = walker.children
    assert children is not None

    def visit(oid: bytes, kind: int, frame: bytes | memoryview, content: Content) -> None:
        nonlocal frame_bytes
        frame_bytes += len(frame)
        own[oid] = own_size(kind, content, len(children.get(oid, ())))

    walker.on_object = visit
    await walker.walk(refs.values())
    out.reachable_objects = len(own)
    out.reachable_bytes = frame_bytes
    sizes = logical_sizes(own, children)

    per_session: dict[str, SessionSize] = {}
    for ref, cid in refs.items():
        size = sizes.get(cid, 0)
        out.logical_bytes += size
        if ref.startswith(names.SESSIONS):
            out.sessions += 1
            sid = names.session_of_ref(ref)
            per_session.setdefault(sid, SessionSize(sid, 0, 0, 0)).head_bytes = size
        elif ref.startswith(names.CHECKPOINTS):
            out.checkpoints += 1
            try:
                sid = names.parse_checkpoint_id(ref[len(names.CHECKPOINTS) :])[0]
            except ValueError:
                continue
            s = per_session.setdefault(sid, SessionSize(sid, 0, 0, 0))
            s.checkpoints += 1
            s.checkpoint_bytes += size
        else:
            out.other_refs += 1
    out.largest = sorted(per_session.values(), key=lambda s: (-(s.head_bytes + s.checkpoint_bytes), s.session))[:top]
    return out


def logical_sizes(
    own: dict[bytes, int], children: dict[bytes, list[bytes]], sizes: dict[bytes, int] | None = None
) -> dict[bytes, int]:
    """Logical size of every object: its own bytes plus its children's, each computed once.

    ``sizes`` holds sizes known already (children outside ``own``); it is filled in place.
    """
    if sizes is None:
        sizes = {}
    for start in own:
        if start in sizes:
            continue
        stack: list[tuple[bytes, bool]] = [(start, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in sizes:
                continue
            kids = children.get(oid, ())
            if expanded:
                sizes[oid] = own.get(oid, 0) + sum(sizes.get(c, 0) for c in kids)
                continue
            stack.append((oid, True))
            stack.extend((c, False) for c in kids if c not in sizes)
    return sizes


__all__ = ["SessionSize", "StoreStats", "logical_sizes", "own_size", "store_stats"]
