"""What a pack store knows of the packs: their heads, their chains, and where each object is.

A ``Catalog`` is built from the pack heads of one listing and only ever grows; after gc
moved the epoch, the store builds a new catalog and swaps it in whole, so a reader never
sees a half-emptied one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from castate.repository.packs.format import READ_CHAIN_MAX, PackInfo

Place = tuple[PackInfo, int, int]  # the pack, and the frame's offset and length in its raw bytes


@dataclass(slots=True)
class Catalog:
    """Packs by name, chains by id, and the object index."""

    packs: dict[str, PackInfo] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # pack name -> why its head was refused
    index: dict[bytes, Place] = field(default_factory=dict)
    chains: dict[bytes, dict[int, PackInfo]] = field(default_factory=dict)
    indexed: dict[bytes, int] = field(default_factory=dict)  # chain -> how many of its first packs are indexed

    def knows(self, name: str) -> bool:
        return name in self.packs or name in self.bad

    def add(self, pack: PackInfo) -> None:
        """Know a pack; its objects count as stored only once its chain is unbroken up to it.

        A pack after a gap, or whose head does not continue its predecessor's (``prev`` and
        ``chain_raw``), cannot be read: the pack of a commit that failed after gc had replaced
        the packs its chain continued (a blob backend may keep the blobs of a failed commit),
        or damage. Listing its objects as stored would let a save skip them."""
        if pack.name in self.packs:
            return
        self.packs[pack.name] = pack
        members = self.chains.setdefault(pack.chain, {})
        members[pack.seq] = pack
        seq = self.indexed.get(pack.chain, 0)
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
        self.indexed[pack.chain] = seq

    def chain(self, chain_id: bytes) -> list[PackInfo]:
        """The packs of a chain in order."""
        members = self.chains.get(chain_id, {})
        return [members[s] for s in sorted(members)]

    def problems(self) -> list[str]:
        """Damage the catalog shows: heads refused, and chains with packs that cannot be read."""
        lines = [f"pack {name}: {why}" for name, why in sorted(self.bad.items())]
        for chain_id, members in self.chains.items():
            readable = self.indexed.get(chain_id, 0)
            if readable < len(members) or (members and max(members) + 1 != len(members)):
                lines.append(
                    f"compression chain {chain_id.hex()}: {len(members) - readable} of its {len(members)} "
                    "packs cannot be read (a pack before them is missing or does not continue the chain)"
                )
        return lines


__all__ = ["Catalog", "Place"]
