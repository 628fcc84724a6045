"""What a pack store knows of the packs: the index segments, the packs no segment covers, and
where each object is.

A ``Catalog`` holds the segments whole (``segments.py``) and parses a pack's row only when a
lookup or a chain needs it, so what an open costs follows the segments' bytes, not the
number of packs. Packs no segment covers (version-2 packs, or packs indexed from their bytes)
are known from their heads, with their objects in a dict. A catalog only ever grows; after gc
moved the epoch, the store builds a new one and swaps it in whole, so a reader never sees a
half-emptied one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from castate.repository.packs.format import PACK_PREFIX, READ_CHAIN_MAX, PackInfo
from castate.repository.packs.segments import Segment, key_of

Place = tuple[PackInfo, int, int]  # the pack, and the frame's offset and length in its raw bytes


@dataclass(slots=True)
class Catalog:
    """Segments, the other packs, and lookups over both."""

    segments: list[Segment] = field(default_factory=list)  # largest first: most lookups end there
    packs: dict[str, PackInfo] = field(default_factory=dict)  # packs no segment covers, from their heads
    bad: dict[str, str] = field(default_factory=dict)  # pack or segment blob -> why it was refused
    index: dict[bytes, Place] = field(default_factory=dict)  # objects of ``packs``
    dead: set[str] = field(default_factory=set)  # packs segments list that a listing showed gone
    orphans: list[str] = field(default_factory=list)  # packs no segment lists, indexed from their bytes
    _chains: dict[bytes, dict[int, PackInfo]] = field(default_factory=dict)  # chain -> seq -> pack
    _readable: dict[bytes, int] = field(default_factory=dict)  # chain -> its first packs that read
    _owners: dict[str, Segment] | None = None  # pack name -> the first segment listing it
    _by_key: dict[tuple[int, bytes], PackInfo | None] = field(default_factory=dict)  # (segment, key) -> pack

    # -- growing ------------------------------------------------------------------------------

    def add_segment(self, segment: Segment) -> None:
        self.segments.append(segment)
        self.segments.sort(key=lambda s: -s.n_entries)
        self._forget()

    def add(self, pack: PackInfo) -> None:
        """Know a pack from its head (with its entries). Its objects count as stored only while
        its chain is unbroken up to it: a pack after a gap, or whose head does not continue its
        predecessor's, cannot be read (the pack of a commit that failed after gc replaced the
        packs its chain continued, or damage); listing its objects would let a save skip them."""
        if pack.name in self.packs:
            return
        self.packs[pack.name] = pack
        for oid, off, length in pack.entries:
            self.index.setdefault(oid, (pack, off, length))
        self._forget()

    def mark_listed(self, listed: set[str], among: set[str]) -> None:
        """A listing of every pack: the packs of ``among`` (those the segments known before the
        listing name) that it lacks are gone."""
        self.dead |= {name for name in among if name not in listed}
        self._forget()

    def _forget(self) -> None:
        self._chains.clear()
        self._readable.clear()
        self._by_key.clear()
        self._owners = None

    # -- what is known ------------------------------------------------------------------------

    def has_segment(self, blob: str) -> bool:
        return blob in self.bad or any(s.blob == blob for s in self.segments)

    def owners(self) -> dict[str, Segment]:
        """Every pack a segment names, with the first segment (largest) naming it."""
        if self._owners is None:
            owners: dict[str, Segment] = {}
            for segment in self.segments:
                for name in segment.pack_names():
                    owners.setdefault(name, segment)
            self._owners = owners
        return self._owners

    def knows(self, name: str) -> bool:
        return name in self.packs or PACK_PREFIX + name in self.bad or name in self.owners()

    def members(self, chain_id: bytes) -> dict[int, PackInfo]:
        """The known packs of a chain by seq (the first segment naming a seq wins)."""
        found = self._chains.get(chain_id)
        if found is None:
            found = {}
            for segment in self.segments:
                for row in segment.chain_rows(chain_id):
                    pack = segment.pack_at(row)
                    if pack is not None and pack.name not in self.dead:
                        found.setdefault(pack.seq, pack)
            for pack in self.packs.values():
                if pack.chain == chain_id:
                    found.setdefault(pack.seq, pack)
            self._chains[chain_id] = found
        return found

    def readable(self, pack: PackInfo) -> bool:
        """Whether ``pack`` is the chain's pack at its seq and every pack before it continues
        the one before, within the chain bound readers accept."""
        members = self.members(pack.chain)
        count = self._readable.get(pack.chain)
        if count is None:
            count = 0
            while count in members:
                member = members[count]
                if count:
                    before = members[count - 1]
                    if (
                        member.prev != bytes.fromhex(before.name)
                        or member.chain_raw != before.chain_raw + before.raw_len
                    ):
                        break
                if member.chain_raw + member.raw_len > READ_CHAIN_MAX:
                    break  # longer than any writer makes a chain: never decompressed
                count += 1
            self._readable[pack.chain] = count
        return pack.seq < count and members[pack.seq].name == pack.name

    def _canonical(self, pack: PackInfo) -> PackInfo | None:
        if not self.readable(pack):
            return None
        return self.members(pack.chain)[pack.seq]

    # -- lookups ------------------------------------------------------------------------------

    def place(self, oid: bytes) -> Place | None:
        """Where one readable copy of ``oid`` is, or None."""
        found = self.index.get(oid)
        if found is not None and self.readable(found[0]):
            return self._canonical(found[0]), found[1], found[2]  # type: ignore[return-value]
        for segment in self.segments:
            hit = segment.first(oid)
            if hit is None:
                continue
            usable = self._usable(segment, *hit)
            if usable is not None:
                return usable
            for key, off, length in segment.find(oid):  # more copies: one may be readable
                usable = self._usable(segment, key, off, length)
                if usable is not None:
                    return usable
        return None

    def _usable(self, segment: Segment, key: bytes, off: int, length: int) -> Place | None:
        slot = (id(segment), key)
        if slot in self._by_key:
            canonical = self._by_key[slot]
        else:
            pack = segment.pack(key)
            canonical = None if pack is None or pack.name in self.dead else self._canonical(pack)
            self._by_key[slot] = canonical
        if canonical is None or off + length > canonical.raw_len or length < 3:
            return None
        return canonical, off, length

    def has(self, oid: bytes) -> bool:
        return self.place(oid) is not None

    # -- everything (gc, fsck, stats) -----------------------------------------------------------

    def all_packs(self) -> Iterator[PackInfo]:
        """Every pack known and not gone, once each."""
        for name, segment in self.owners().items():
            if name not in self.dead and name not in self.packs:
                pack = segment.pack(key_of(name))
                if pack is not None:
                    yield pack
        yield from self.packs.values()

    def entries(self, segments: list[Segment] | None = None) -> Iterator[tuple[PackInfo, bytes, int, int]]:
        """(pack, id, offset, length) for every object of a pack not gone, once per pack (with
        ``segments``: only the packs these segments are first to name, without ``packs``)."""
        for pack in self.packs.values() if segments is None else ():
            for oid, off, length in pack.entries:
                yield pack, oid, off, length
        owners = self.owners()
        for segment in self.segments if segments is None else segments:
            keep: dict[bytes, PackInfo | None] = {}
            for oid, key, off, length in segment.entries():
                if key not in keep:
                    found = segment.pack(key)
                    if found is not None and (
                        owners.get(found.name) is not segment or found.name in self.dead or found.name in self.packs
                    ):
                        found = None
                    keep[key] = found
                owner = keep[key]
                if owner is not None:
                    yield owner, oid, off, length

    def chain(self, chain_id: bytes) -> list[PackInfo]:
        """The packs of a chain in order."""
        members = self.members(chain_id)
        return [members[s] for s in sorted(members)]

    def problems(self) -> list[str]:
        """Damage the catalog shows: blobs refused, packs no segment lists, and chains with
        packs that cannot be read."""
        lines = [f"{name}: {why}" for name, why in sorted(self.bad.items())]
        for segment in self.segments:
            lines.extend(segment.check())
            lines.extend(f"{PACK_PREFIX}{name}: {why} ({segment.blob})" for name, why in segment.refused.items())
        lines.extend(
            f"{name}: no index segment lists it (its objects were found by reading it; "
            "the next merge of segments lists it again)"
            for name in self.orphans
        )
        for chain_id in {p.chain for p in self.all_packs()}:
            members = self.members(chain_id)
            readable = sum(1 for p in members.values() if self.readable(p))
            if readable < len(members) or (members and max(members) + 1 != len(members)):
                lines.append(
                    f"compression chain {chain_id.hex()}: {len(members) - readable} of its {len(members)} "
                    "packs cannot be read (a pack before them is missing or does not continue the chain)"
                )
        return lines


__all__ = ["Catalog", "Place"]
