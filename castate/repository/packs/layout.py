"""Where gc puts the objects it rewrites: together with the objects that live as long.

A save appends its new objects to its session's chain, so chains are in write order, and
most of their bytes are short-lived (the nodes a save rewrites at every step). A checkpoint
taken long ago, or a state that keeps a few old objects (an agent's older messages, a cache
that grows), then needs an object here and there in many chains, and reading each one
decompresses its chain up to it: at 5,000 saves of a windowed session, 7x the bytes the
restore needs.

gc knows more than a writer: for every object, the oldest and the newest save that uses it.
An object's *lifetime* is the number of saves between the two; its *class* groups
lifetimes by powers of four (1, 2-3... saves: see ``lifetime_class``). gc writes each class as
its own chains, in write order. A checkpoint taken at save t needs, in each class, the
objects written in a stretch just before t, and at least about half of what the class wrote
in that stretch is live at t; so a restore decompresses about twice what it needs plus one
chain prefix per class, wherever t lies in the history (docs/performance.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from castate.codec.nodes import parse_commit
from castate.codec.objects import KIND_COMMIT, Ids
from castate.errors import CorruptionError, UnsupportedFormatError
from castate.repository.walk import CHUNKS, links

ID_SIZE = 32
# Classes from this one on (objects used by saves at least 63 apart) are few bytes that many
# checkpoints read: their chains are cut at LONG_CHAIN_RAW, so that a restore decompresses
# less of each. Measured on the windowed workload at 5,000 saves after gc (2.9 MB needed):
# 1 MiB chains decompressed 9.2 MB, 512 KiB 7.5 MB, 256 KiB 6.7 MB, for 1%, 4% and 8% more
# SQLite file than gc merging each chain into one pack, as it did before (docs/performance.md).
LONG_LIVED = 4
LONG_CHAIN_RAW = 512 << 10
UNKNOWN = -1  # no ref reaches the object (young, or kept by the reflog): written in write order
COMMIT_BATCH = 256  # commits whose trees one round of the walk visits together
READ_BATCH = 4096  # objects one read asks for

GetObjects = Callable[[Collection[bytes]], Awaitable[dict[bytes, Any]]]


def lifetime_class(first: int, last: int) -> int:
    """The class of an object first used by save ``first`` and last by save ``last`` (ranks
    of commits): 1 when they are 0 to 2 saves apart, 2 for 3 to 14, 3 for 15 to 62, and so on
    (classes about a factor four wide)."""
    return ((max(last - first, 0) + 1).bit_length() + 1) // 2


async def last_uses(get_objects: GetObjects, scheme: Ids, roots: Iterable[bytes]) -> tuple[list[int], dict[bytes, int]]:
    """The commits among ``roots`` (ref targets) sorted by time, as their times, and for every
    object they reach, the rank in that order of the newest commit reaching it.

    Commits are walked newest first, a batch at a time: an object's first visit comes from
    the newest batch reaching it, and within a batch an object reached again from a newer
    commit is visited again (rarely: its path from that commit is longer). Chunks of large values are not read
    (they have no children). Objects that cannot be read are skipped: this only decides
    where objects go, and gc stops on damage before it gets here."""
    commits: list[tuple[int, bytes]] = []
    ids = sorted({r for r in roots if len(r) == ID_SIZE})
    for start in range(0, len(ids), READ_BATCH):
        frames = await _read(get_objects, ids[start : start + READ_BATCH])
        for oid, frame in frames.items():
            parsed = _parse(scheme, oid, frame)
            if parsed is not None and parsed[0] == KIND_COMMIT:
                try:
                    commits.append((parse_commit(oid, parsed[1]).time_ns, oid))
                except (CorruptionError, UnsupportedFormatError):
                    continue
    commits.sort()
    last: dict[bytes, int] = {}
    for end in range(len(commits), 0, -COMMIT_BATCH):
        start = max(0, end - COMMIT_BATCH)
        frontier = {oid: rank for rank, (_, oid) in enumerate(commits[start:end], start) if oid not in last}
        while frontier:
            last.update(frontier)
            level = list(frontier.items())
            frontier = {}
            for start in range(0, len(level), READ_BATCH):
                part = level[start : start + READ_BATCH]
                frames = await _read(get_objects, [oid for oid, _ in part])
                for oid, rank in part:
                    frame = frames.get(oid)
                    parsed = None if frame is None else _parse(scheme, oid, frame)
                    if parsed is None:
                        continue
                    try:
                        children = links(oid, parsed[0], parsed[1], False)
                    except (CorruptionError, UnsupportedFormatError):
                        continue
                    for child, allowed in children:
                        if last.get(child, -1) >= rank:
                            continue  # reached from a newer commit already
                        # A commit of this batch reached it first from an older one, through a
                        # shorter path (a list that grew an index level since): visit it again.
                        if allowed is CHUNKS:
                            last[child] = rank  # a leaf: no need to read it
                        elif frontier.get(child, -1) < rank:
                            frontier[child] = rank
    return [t for t, _ in commits], last


def first_use(times: list[int], written_ns: int) -> int:
    """The rank of the newest commit made no later than ``written_ns`` (a pack's time): the
    save that wrote the pack, or the one before it."""
    return max(bisect.bisect_right(times, written_ns) - 1, 0)


async def _read(get_objects: GetObjects, ids: list[bytes]) -> dict[bytes, Any]:
    try:
        return await get_objects(ids)
    except CorruptionError:
        out: dict[bytes, Any] = {}
        for oid in ids:  # one damaged object: read the rest one by one
            try:
                out.update(await get_objects([oid]))
            except CorruptionError:
                continue
        return out


def _parse(scheme: Ids, oid: bytes, frame: Any) -> tuple[int, Any] | None:
    try:
        return scheme.decode_frame(oid, frame)
    except (CorruptionError, UnsupportedFormatError):
        return None


__all__ = ["LONG_CHAIN_RAW", "LONG_LIVED", "UNKNOWN", "first_use", "last_uses", "lifetime_class"]
