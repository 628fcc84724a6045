"""Growth of a history: what each save added to the store, and how large each state is.

For a session's saves, oldest first along first parents (``Repository.log`` reversed),
the objects a save *adds* are those its state reaches that no earlier save of that
history reached: the save's new objects relative to its parent, except that content
which comes back after being dropped is not counted again (the store kept it, and a save
never writes an object twice). One ``Walker`` goes along the history and visits each
object once, so the whole history costs one walk over its distinct objects.

Each save's numbers depend only on its commit and the commits before it that are still
stored: the commits never change (a commit id names its parents), but gc may remove the
oldest saves, and then the history starts later. So ``GrowthIndex`` keeps them per commit
*and the first commit of the history they were measured in* (its base), and keeps the
walker where it stopped: after a few more saves only the new objects are read. A fork's
history holds its source's saves, so it continues from the source's walk.

``export`` and ``absorb`` hand that knowledge over as plain data (``GrowthState``), so a
later process can continue where this one stopped (``castate ui`` keeps it in a cache file).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
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


@dataclass(slots=True)
class GrowthState:
    """What a ``GrowthIndex`` knows, as plain data: each save's growth with its history's
    base (``done``: base, growth), the walks that can be continued (``walks``: base, tip, the
    objects seen so far), and the logical sizes of those objects (``sizes``)."""

    done: list[tuple[bytes, Growth]]
    walks: list[tuple[bytes, bytes, set[bytes]]]
    sizes: dict[bytes, int]


class _Walk:
    """A walker that has gone along one history (starting at ``base``) up to ``tip``."""

    def __init__(self, backend: Backend, base: bytes) -> None:
        self.walker = Walker(backend, record_children=True)
        self.base = base
        self.tip: bytes | None = None

    def copy(self, backend: Backend) -> _Walk:
        other = _Walk(backend, self.base)
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
        self.bases: dict[bytes, bytes] = {}  # per commit in done: the first commit of its history
        self._walks: OrderedDict[bytes, _Walk] = OrderedDict()

    def known(self, chain: Sequence[bytes]) -> list[Growth] | None:
        """The growth of every save of ``chain`` if all of it is known, else None (reads nothing)."""
        if not chain:
            return []
        done, bases, base = self.done, self.bases, chain[0]
        if all(bases.get(c) == base for c in chain):
            return [done[c] for c in chain]
        return None

    def pending(self, chain: Sequence[bytes]) -> int:
        """How many saves of ``chain`` the next ``history`` call would walk (0: none)."""
        if self.known(chain) is not None:
            return 0
        return len(chain) - self._start(chain)[0]

    async def history(self, chain: Sequence[bytes]) -> list[Growth]:
        """The growth of every save of ``chain``: commit ids, oldest first, each the first
        parent of the next (a session's log, reversed)."""
        known = self.known(chain)
        if known is not None:
            return known
        start, kept = self._start(chain)
        # A copy: the history that stopped there (a fork's source) may go on differently.
        walk = kept.copy(self.backend) if kept is not None else _Walk(self.backend, chain[0])
        for cid in chain[start:]:
            self.done[cid] = await self._step(walk, cid)
            self.bases[cid] = walk.base
        if walk.tip is not None:
            self._keep(walk)
        return [self.done[c] for c in chain]

    def _keep(self, walk: _Walk) -> None:
        assert walk.tip is not None
        self._walks[walk.tip] = walk
        self._walks.move_to_end(walk.tip)
        while len(self._walks) > self.max_walks:
            self._walks.popitem(last=False)

    def _start(self, chain: Sequence[bytes]) -> tuple[int, _Walk | None]:
        """Where to start: after the newest commit of ``chain`` a kept walker of the same
        history (same base) stopped at."""
        base = chain[0] if chain else b""
        for i in range(len(chain) - 1, -1, -1):
            kept = self._walks.get(chain[i])
            if kept is not None and kept.base == base:
                return i + 1, kept
        return 0, None

    # -- handing over to a later process ------------------------------------------------------

    def export(self, chains: Iterable[Sequence[bytes]]) -> GrowthState:
        """What is known of the saves of ``chains`` (the histories still worth keeping, e.g.
        every session's now), with the walk that went furthest along each of them."""
        keep: set[bytes] = set()
        tips: dict[bytes, _Walk] = {}
        for chain in chains:
            keep.update(chain)
            _, walk = self._start(chain)
            if walk is not None and walk.tip is not None:
                tips[walk.tip] = walk
        done = [(self.bases[c], g) for c, g in self.done.items() if c in keep]
        walks = [(w.base, tip, set(w.walker.seen)) for tip, w in tips.items()]
        seen: set[bytes] = set().union(*(s for _, _, s in walks)) if walks else set()
        sizes = {o: n for o, n in self.sizes.items() if o in seen}
        return GrowthState(done, walks, sizes)

    def absorb(self, state: GrowthState) -> None:
        """Take over what an earlier ``export`` knew (what this index knows already wins).

        The numbers are as trustworthy as where ``state`` came from: a caller that read it
        from a file shows them, and uses them for nothing else."""
        for base, g in state.done:
            if g.commit not in self.done:
                self.done[g.commit] = g
                self.bases[g.commit] = base
        for o, n in state.sizes.items():
            self.sizes.setdefault(o, n)
        for base, tip, seen in state.walks:
            if tip not in self._walks:
                walk = _Walk(self.backend, base)
                walk.walker.seen = set(seen)
                walk.tip = tip
                self._walks[tip] = walk
                self._walks.move_to_end(tip, last=False)  # older than the walks of this process
        while len(self._walks) > self.max_walks:
            self._walks.popitem(last=False)

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


__all__ = ["Growth", "GrowthIndex", "GrowthState"]
