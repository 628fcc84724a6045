"""Growth of a history: what each save added to the store, and how large each state is.

For a session's saves, oldest first along first parents (``Repository.log`` reversed),
the objects a save *adds* are those its state reaches that no earlier save of that
history reached: the save's new objects relative to its parent, except that content
which comes back after being dropped is not counted again (the store kept it, and a save
never writes an object twice). One ``Walker`` goes along the history and visits each
object once, so the whole history costs one walk over its distinct objects.

Each save's numbers depend only on its commit and the commits before it, which never
change, so ``GrowthIndex`` keeps them per commit and keeps the walker where it stopped:
after a few more saves only the new objects are read. A fork's history holds its
source's saves, so it continues from the source's walk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from castate.backends.base import Backend
from castate.codec.decoder import Content
from castate.repository.stats import logical_sizes, own_size
from castate.repository.walk import Walker

MAX_WALKS = 16  # histories whose walker is kept for incremental updates


@dataclass(frozen=True, slots=True)
class Growth:
    """One save of a history.

    ``new_objects`` and ``new_bytes``: the objects the save added and their sizes as the
    backend stores them (frames; the local store compresses packs on top). ``logical_bytes``:
    the state's logical size (``castate.repository.stats``). ``complete``: False when some
    object under the save was missing or corrupt (the numbers then leave it out).
    """

    commit: bytes
    new_objects: int
    new_bytes: int
    logical_bytes: int
    complete: bool = True


class _Walk:
    """A walker that has gone along one history up to ``tip``."""

    def __init__(self, backend: Backend) -> None:
        self.walker = Walker(backend, record_children=True)
        self.tip: bytes | None = None

    def copy(self, backend: Backend) -> _Walk:
        other = _Walk(backend)
        other.walker.seen = set(self.walker.seen)
        other.walker.problems = dict(self.walker.problems)
        other.tip = self.tip
        return other


class GrowthIndex:
    """Per-save growth of histories, computed once per commit and updated incrementally.

    Not safe for concurrent calls from several tasks; callers serialize (the UI holds a lock).
    """

    def __init__(self, backend: Backend, *, max_walks: int = MAX_WALKS) -> None:
        self.backend = backend
        self.max_walks = max_walks
        self.sizes: dict[bytes, int] = {}  # logical size per object id: content-addressed, so final
        self.done: dict[bytes, Growth] = {}
        self._walks: OrderedDict[bytes, _Walk] = OrderedDict()

    async def history(self, chain: Sequence[bytes]) -> list[Growth]:
        """The growth of every save of ``chain``: commit ids, oldest first, each the first
        parent of the next (a session's log, reversed)."""
        if all(c in self.done for c in chain):
            return [self.done[c] for c in chain]
        start, walk = self._resume(chain)
        for cid in chain[start:]:
            self.done[cid] = await self._step(walk, cid)
        if walk.tip is not None:
            self._walks[walk.tip] = walk
            self._walks.move_to_end(walk.tip)
            while len(self._walks) > self.max_walks:
                self._walks.popitem(last=False)
        return [self.done[c] for c in chain]

    def _resume(self, chain: Sequence[bytes]) -> tuple[int, _Walk]:
        """Where to start: after the newest commit of ``chain`` a kept walker stopped at."""
        for i in range(len(chain) - 1, -1, -1):
            kept = self._walks.get(chain[i])
            if kept is not None:
                # A copy: the history that stopped there (a fork's source) may go on differently.
                return i + 1, kept.copy(self.backend)
        return 0, _Walk(self.backend)

    async def _step(self, walk: _Walk, cid: bytes) -> Growth:
        walker = walk.walker
        children = walker.children
        assert children is not None
        children.clear()
        walker.kinds.clear()
        own: dict[bytes, int] = {}
        stored = 0

        def visit(oid: bytes, kind: int, frame: bytes | memoryview, content: Content) -> None:
            nonlocal stored
            stored += len(frame)
            own[oid] = own_size(kind, content, len(children.get(oid, ())))

        walker.on_object = visit
        problems = len(walker.problems)
        await walker.walk([cid])
        walker.on_object = None
        logical_sizes(own, children, self.sizes)
        walk.tip = cid
        complete = len(walker.problems) == problems and cid not in walker.problems
        return Growth(cid, len(own), stored, self.sizes.get(cid, 0), complete)


__all__ = ["Growth", "GrowthIndex"]
