"""Reachability: the one walk over the object graph that gc, fsck, stats and export share.

A ``Walker`` starts from commits (or any objects), fetches one batch of ids per tree level,
verifies each object against its id, and visits every object once however many trees
share it. A commit leads to its root only: parents are history, kept by the reflog and by
checkpoints, not by reachability (docs/architecture.md explains why). Missing and corrupt
objects are recorded, never raised, so a caller sees all the damage in one pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from castate.backends.base import Backend
from castate.codec import child_ids
from castate.codec.decoder import Content
from castate.codec.encoder import MAX_DEPTH
from castate.codec.nodes import (
    INDEX_DICT,
    check_nesting,
    parse_chunked,
    parse_commit,
    parse_index,
    parse_node,
    parse_typed,
)
from castate.codec.objects import (
    ID_SIZE,
    KIND_BYTES,
    KIND_CHUNK,
    KIND_CHUNKED,
    KIND_COMMIT,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_NAMES,
    KIND_STR,
    KIND_TYPED,
)
from castate.codec.types import EXT_USER
from castate.errors import CorruptionError, CorruptObjectError, UnsupportedFormatError

BATCH = 2048  # ids per get_objects call: bounds memory and request size on servers

VALUES = frozenset((KIND_STR, KIND_BYTES, KIND_CHUNKED, KIND_DICT, KIND_LIST, KIND_INDEX, KIND_TYPED))
ROOTS = frozenset((KIND_DICT, KIND_INDEX))
LIST_RUNS = frozenset((KIND_LIST, KIND_INDEX))
DICT_RUNS = frozenset((KIND_DICT, KIND_INDEX))
CHUNKS = frozenset((KIND_CHUNK,))
ANYTHING = frozenset(KIND_NAMES)

#: Called for each visited object: (id, kind, frame as stored, verified content).
Visit = Callable[[bytes, int, bytes | memoryview, Content], None]
#: Called after each batch with the number of objects visited so far.
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Problem:
    """A reachable object that is absent or fails verification, and who points at it."""

    id: bytes
    what: str  # "missing" or "corrupt"
    detail: str
    parent: bytes | None


def links(oid: bytes, kind: int, content: Content, deep: bool) -> list[tuple[bytes, frozenset[int]]]:
    """The objects ``oid`` points at, each with the kinds allowed there.

    ``deep`` also parses JSON bodies and text, so an object that would fail to decode
    fails here (fsck); without it only the tables that locate children are parsed (gc).
    Raises CorruptObjectError.
    """
    if kind == KIND_COMMIT:
        commit = parse_commit(oid, content) if deep else None
        root = commit.root if commit else bytes(content[:ID_SIZE])
        if len(root) != ID_SIZE:
            raise CorruptObjectError(oid.hex(), "bad commit: truncated root")
        return [(root, ROOTS)]
    if kind in (KIND_DICT, KIND_LIST):
        if deep:
            check_nesting(oid, parse_node(oid, kind, content, tagged=True)[0])
        return [(c, VALUES) for c in child_ids(oid, kind, content)]
    if kind == KIND_INDEX:
        flavor, children = parse_index(oid, content)
        allowed = DICT_RUNS if flavor == INDEX_DICT else LIST_RUNS
        return [(c, allowed) for c, _ in children]
    if kind == KIND_CHUNKED:
        return [(c, CHUNKS) for c, _ in parse_chunked(oid, content)[2]]
    if kind == KIND_TYPED:
        code, inner, _ = parse_typed(oid, content)
        return [(inner, VALUES if code == EXT_USER else LIST_RUNS)]
    if kind == KIND_STR and deep:
        try:
            bytes(content).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptObjectError(oid.hex(), f"str object is not UTF-8: {exc}") from None
    return []


class Walker:
    """Visits every object reachable from the ids given to ``walk``, each once.

    ``deep``: parse every body too (fsck). ``fetch_chunks``: read chunks of large values
    (they have no children, so gc only marks them). ``record_children``: keep each
    object's child list in ``children`` (stats and fsck's damage report need it).
    ``on_object`` sees each object as it is verified; ``on_batch`` is awaited after each
    batch (export writes there, so memory holds one batch, not the tree).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        deep: bool = False,
        fetch_chunks: bool = True,
        record_children: bool = False,
        on_object: Visit | None = None,
        on_batch: Callable[[], Awaitable[None]] | None = None,
        progress: Progress | None = None,
        batch: int = BATCH,
    ) -> None:
        self.backend = backend
        self.deep = deep
        self.fetch_chunks = fetch_chunks
        self.on_object = on_object
        self.on_batch = on_batch
        self.progress = progress
        self.batch = batch
        self.seen: set[bytes] = set()
        self.kinds: dict[bytes, int] = {}
        self.children: dict[bytes, list[bytes]] | None = {} if record_children else None
        self.problems: dict[bytes, Problem] = {}
        self.visited = 0

    async def walk(self, ids: Iterable[bytes], allowed: frozenset[int] = ANYTHING, *, depth: int = 0) -> int:
        """Visit everything reachable from ``ids`` not visited before; returns how many objects that was.

        ``depth``: how many dict and list nodes are above ``ids`` (an import checking a subtree
        its bundle reaches at that depth)."""
        start = self.visited
        frontier: dict[bytes, tuple[frozenset[int], bytes | None, int]] = {}
        for oid in ids:
            if oid not in self.seen and oid not in frontier:
                frontier[oid] = (allowed, None, depth)
        while frontier:
            level = list(frontier.items())
            frontier = {}
            for i in range(0, len(level), self.batch):
                part = level[i : i + self.batch]
                for oid, _ in part:
                    self.seen.add(oid)
                frames, unreadable = await get_frames(self.backend, [oid for oid, _ in part])
                for oid, (want, parent, depth) in part:
                    if oid in unreadable:
                        self.visited += 1
                        self.problems[oid] = Problem(oid, "corrupt", unreadable[oid], parent)
                        continue
                    children = self._visit(oid, frames.get(oid), want, parent, depth)
                    if children and self.kinds[oid] in (KIND_DICT, KIND_LIST):
                        depth += 1  # container nodes nest; index nodes and commits do not
                    for child, child_allowed in children:
                        if child in self.seen or child in frontier:
                            continue
                        if child_allowed is CHUNKS and not self.fetch_chunks:
                            self.seen.add(child)  # a leaf: marking it is enough
                            self.visited += 1
                            continue
                        frontier[child] = (child_allowed, oid, depth)
                if self.on_batch is not None:
                    await self.on_batch()
                if self.progress is not None:
                    self.progress(self.visited)
        return self.visited - start

    def _visit(
        self, oid: bytes, frame: bytes | memoryview | None, want: frozenset[int], parent: bytes | None, depth: int
    ) -> list[tuple[bytes, frozenset[int]]]:
        self.visited += 1
        if frame is None:
            self.problems[oid] = Problem(oid, "missing", "not in the store", parent)
            return []
        try:
            kind, content = self.backend.ids.decode_frame(oid, frame)
            if kind not in want:
                raise CorruptObjectError(oid.hex(), f"a {KIND_NAMES[kind]} object where a {_names(want)} belongs")
            if depth >= MAX_DEPTH and kind in (KIND_DICT, KIND_LIST):
                raise CorruptObjectError(oid.hex(), f"nodes nested deeper than {MAX_DEPTH} levels")
            out = links(oid, kind, content, self.deep)
        except (CorruptionError, UnsupportedFormatError) as exc:
            self.problems[oid] = Problem(oid, "corrupt", str(exc), parent)
            return []
        self.kinds[oid] = kind
        if self.children is not None:
            self.children[oid] = [c for c, _ in out]
        if self.on_object is not None:
            self.on_object(oid, kind, frame, content)
        return out


async def get_frames(backend: Backend, ids: list[bytes]) -> tuple[dict[bytes, bytes], dict[bytes, str]]:
    """Frames of ``ids``, and the ids the backend itself reports as unreadable (a damaged
    pack record), each with the reason: one bad object does not hide the rest of a batch."""
    unreadable: dict[bytes, str] = {}
    todo = list(ids)
    while True:
        try:
            return await backend.get_objects(todo), unreadable
        except CorruptObjectError as exc:
            try:
                oid = bytes.fromhex(exc.object_id)
            except ValueError:
                raise exc from None
            if oid not in todo:
                raise
            unreadable[oid] = str(exc)
            todo.remove(oid)


async def first_damage(backend: Backend, commit: bytes) -> Problem | None:
    """The first object of ``commit``'s tree that is missing or fails verification, or None
    when the whole tree is there.

    A commit and its root can survive gc while objects below them went (a subtree it shared
    with a pack gc could delete): before a ref is made to point at a commit that no ref
    holds, its whole tree must be checked, not its root. Chunks of large values are checked
    for presence only (they have no children), so this reads the nodes a restore reads,
    never the large values.
    """
    walker = Walker(backend, fetch_chunks=False)
    await walker.walk([commit], frozenset((KIND_COMMIT,)))
    if walker.problems:
        return next(iter(walker.problems.values()))
    chunks = [oid for oid in walker.seen if oid not in walker.kinds]  # marked, not fetched
    for i in range(0, len(chunks), BATCH):
        part = chunks[i : i + BATCH]
        present = await backend.has_objects(part)
        for oid in part:
            if oid not in present:
                return Problem(oid, "missing", "a chunk of a large value, not in the store", None)
    return None


def _names(kinds: frozenset[int]) -> str:
    return " or ".join(sorted(KIND_NAMES[k] for k in kinds))


def ancestors(children: dict[bytes, list[bytes]], bad: Iterable[bytes]) -> set[bytes]:
    """Every object whose subtree holds one of ``bad`` (the bad ones included)."""
    parents: dict[bytes, list[bytes]] = {}
    for p, cs in children.items():
        for c in cs:
            parents.setdefault(c, []).append(p)
    out: set[bytes] = set()
    stack = list(bad)
    while stack:
        oid = stack.pop()
        if oid in out:
            continue
        out.add(oid)
        stack.extend(parents.get(oid, ()))
    return out


__all__ = ["BATCH", "Problem", "Walker", "ancestors", "first_damage", "get_frames", "links"]
