"""What a pack store knows of the packs: their heads, their chains, and where each object is.

A ``Catalog`` is built from one listing: the index segments (``segments.py``) cover most
packs, and only the packs no segment covers are known from their own heads, with their
objects in a dict. It only ever grows; after gc moved the epoch, the store builds a new
catalog and swaps it in whole, so a reader never sees a half-emptied one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from castate.repository.packs.format import PACK_PREFIX, READ_CHAIN_MAX, PackInfo
from castate.repository.packs.segments import Segment

Place = tuple[PackInfo, int, int]  # the pack, and the frame's offset and length in its raw bytes


@dataclass(slots=True)
class Catalog:
    """Segments and the packs they cover, the other packs, chains by id, and the lookups."""

    segments: list[Segment] = field(default_factory=list)  # largest first: most lookups end there
    covered: dict[str, PackInfo] = field(default_factory=dict)  # listed packs a segment covers
    packs: dict[str, PackInfo] = field(default_factory=dict)  # listed packs no segment covers
    bad: dict[str, str] = field(default_factory=dict)  # pack or segment blob -> why it was refused
    index: dict[bytes, Place] = field(default_factory=dict)  # objects of ``packs``
    chains: dict[bytes, dict[int, PackInfo]] = field(default_factory=dict)
    indexed: dict[bytes, int] = field(default_factory=dict)  # chain -> how many of its first packs are readable
    orphans: list[str] = field(default_factory=list)  # packs no segment lists, indexed from their bytes

    def has_segment(self, blob: str) -> bool:
        return blob in self.bad or any(s.blob == blob for s in self.segments)

    def knows(self, name: str) -> bool:
        return name in self.covered or name in self.packs or PACK_PREFIX + name in self.bad

    def cover(self, segment: Segment, listed: set[str]) -> None:
        """Take a segment's packs that the listing shows (gc may have deleted others since the
        segment was written). Its chains are readable as far as they run unbroken: a segment
        lists a chain's packs from seq 0 without gaps, as its writer checked."""
        self.segments.append(segment)
        self.segments.sort(key=lambda s: -s.n_entries)
        for pack in segment.packs:
            if pack.name in listed and pack.name not in self.covered and pack.name not in self.packs:
                self.covered[pack.name] = pack
                self.chains.setdefault(pack.chain, {})[pack.seq] = pack
        for chain_id in {p.chain for p in segment.packs}:
            self._advance(chain_id)

    def add(self, pack: PackInfo) -> None:
        """Know a pack from its head; its objects count as stored only once its chain is
        unbroken up to it.

        A pack after a gap, or whose head does not continue its predecessor's (``prev`` and
        ``chain_raw``), cannot be read: the pack of a commit that failed after gc had replaced
        the packs its chain continued (a blob backend may keep the blobs of a failed commit),
        or damage. Listing its objects as stored would let a save skip them."""
        if pack.name in self.packs or pack.name in self.covered:
            return
        self.packs[pack.name] = pack
        self.chains.setdefault(pack.chain, {})[pack.seq] = pack
        self._advance(pack.chain)

    def _advance(self, chain_id: bytes) -> None:
        members = self.chains.get(chain_id, {})
        seq = self.indexed.get(chain_id, 0)
        index = self.index
        while seq in members:
            member = members[seq]
            if seq:
                before = members[seq - 1]
                if member.prev != bytes.fromhex(before.name) or member.chain_raw != before.chain_raw + before.raw_len:
                    break
            if member.chain_raw + member.raw_len > READ_CHAIN_MAX:
                break  # longer than any writer makes a chain: never decompressed
            for oid, off, length in member.entries:
                if oid not in index:
                    index[oid] = (member, off, length)
            seq += 1
        self.indexed[chain_id] = seq

    def readable(self, pack: PackInfo) -> bool:
        return pack.seq < self.indexed.get(pack.chain, 0) and self.chains[pack.chain].get(pack.seq) is pack

    def place(self, oid: bytes) -> Place | None:
        """Where one readable copy of ``oid`` is, or None."""
        found = self.index.get(oid)
        if found is not None:
            return found
        for segment in self.segments:
            hit = segment.first(oid)
            if hit is None:
                continue
            usable = self._usable(segment, *hit)
            if usable is not None:
                return usable
            for row, off, length in segment.find(oid):  # more copies: one may be readable
                usable = self._usable(segment, row, off, length)
                if usable is not None:
                    return usable
        return None

    def _usable(self, segment: Segment, row: int, off: int, length: int) -> Place | None:
        pack = self.covered.get(segment.packs[row].name) if row < segment.n_packs else None
        if pack is not None and off + length <= pack.raw_len and length >= 3 and self.readable(pack):
            return pack, off, length
        return None

    def has(self, oid: bytes) -> bool:
        return self.place(oid) is not None

    def all_packs(self) -> Iterator[PackInfo]:
        yield from self.covered.values()
        yield from self.packs.values()

    def entries(self, segments: list[Segment] | None = None) -> Iterator[tuple[PackInfo, bytes, int, int]]:
        """(pack, id, offset, length) for every object listed in a listed pack (with ``segments``:
        only those of the packs these segments cover, without the packs no segment covers)."""
        for pack in self.packs.values() if segments is None else ():
            for oid, off, length in pack.entries:
                yield pack, oid, off, length
        for segment in self.segments if segments is None else segments:
            rows = segment.packs
            for oid, row, off, length in segment.entries():
                owner = self.covered.get(rows[row].name) if row < segment.n_packs else None
                if owner is not None and owner is rows[row]:  # once, from the segment that covers it
                    yield owner, oid, off, length

    def chain(self, chain_id: bytes) -> list[PackInfo]:
        """The packs of a chain in order."""
        members = self.chains.get(chain_id, {})
        return [members[s] for s in sorted(members)]

    def problems(self) -> list[str]:
        """Damage the catalog shows: heads refused, and chains with packs that cannot be read."""
        lines = [f"{name}: {why}" for name, why in sorted(self.bad.items())]
        lines.extend(
            f"{name}: no index segment lists it (its objects were found by reading it; "
            "the next merge of segments lists it again)"
            for name in self.orphans
        )
        for chain_id, members in self.chains.items():
            readable = self.indexed.get(chain_id, 0)
            if readable < len(members) or (members and max(members) + 1 != len(members)):
                lines.append(
                    f"compression chain {chain_id.hex()}: {len(members) - readable} of its {len(members)} "
                    "packs cannot be read (a pack before them is missing or does not continue the chain)"
                )
        return lines


__all__ = ["Catalog", "Place"]
