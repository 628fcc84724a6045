"""How a pack store learns what a store holds: its index segments, and when it must, a
listing of its packs and the heads (or bytes) of packs no segment covers.

An open reads the segments alone; a listing of ``packs/`` comes in only for a store without
segments, after a gc that failed, for gc and fsck, and when an object is asked for that the
segments do not hold (docs/format.md §6.2, "Opening").
"""

from __future__ import annotations

from castate.backends.blob import BlobBackend, BlobInfo
from castate.codec.objects import PLAIN, Ids
from castate.errors import CorruptFileError, CorruptionError, UnsupportedFormatError
from castate.repository.packs.catalog import Catalog
from castate.repository.packs.chains import ChainCache, ChainDamage
from castate.repository.packs.format import PACK_PREFIX, PackInfo, entries_end, parse_pack_head
from castate.repository.packs.segments import INDEX_PREFIX, MAX_SEGMENT_BYTES, parse_segment

HEAD_READ = 4096  # bytes read from each pack whose head is read: the head and, usually, every entry
HEAD_BATCH = 1000  # packs whose heads one range-read call asks for
LIST_ATTEMPTS = 3


async def load_catalog(blobs: BlobBackend, ids: Ids = PLAIN) -> Catalog:
    """A catalog from the index segments alone (a store without any, from before them or
    new, has its packs listed and read from their heads). A segment deleted between the
    listing and the read was merged into a newer one by another writer: list again."""
    cat = Catalog()
    for attempt in range(LIST_ATTEMPTS):
        cat = Catalog()
        if await add_segments(blobs, cat, last=attempt + 1 == LIST_ATTEMPTS):
            break
    if not cat.segments:
        await list_packs(blobs, cat, ids)
    return cat


async def add_segments(blobs: BlobBackend, cat: Catalog, *, last: bool) -> bool:
    """Add the listed segments ``cat`` lacks; False if one was gone when read (unless
    ``last``: then what it covered stays unknown)."""
    wanted = []
    for info in await blobs.list_blobs(INDEX_PREFIX):
        if cat.has_segment(info.name):
            continue
        if info.size > MAX_SEGMENT_BYTES:
            cat.bad[info.name] = f"index segment of {info.size} bytes (at most {MAX_SEGMENT_BYTES} are read)"
        else:
            wanted.append(info.name)
    got = await blobs.get_blobs(wanted) if wanted else {}
    if len(got) < len(wanted) and not last:
        return False
    for blob, data in got.items():
        try:
            cat.add_segment(parse_segment(blob[len(INDEX_PREFIX) :], data))
        except (CorruptFileError, UnsupportedFormatError) as exc:
            cat.bad[blob] = str(exc)
    return True


async def list_packs(blobs: BlobBackend, cat: Catalog, ids: Ids = PLAIN) -> list[BlobInfo]:
    """List the packs: those the segments already known name and the listing lacks are gone
    (a segment read later may name a pack committed after the listing); segments of saves
    committed meanwhile are read, then the heads of listed packs no segment covers."""
    known = set(cat.owners())
    infos = await blobs.list_blobs(PACK_PREFIX)
    listed = {i.name[len(PACK_PREFIX) :] for i in infos}
    cat.mark_listed(listed, among=known)
    if any(not cat.knows(name) for name in listed):
        await add_segments(blobs, cat, last=True)  # a save commits its pack and segment together
    await read_heads(blobs, cat, infos, ids)
    return infos


async def read_heads(blobs: BlobBackend, cat: Catalog, infos: list[BlobInfo], ids: Ids = PLAIN) -> None:
    new = [i for i in infos if not cat.knows(i.name[len(PACK_PREFIX) :])]
    for start in range(0, len(new), HEAD_BATCH):
        await _read_head_batch(blobs, cat, new[start : start + HEAD_BATCH], ids)


async def _read_head_batch(blobs: BlobBackend, cat: Catalog, infos: list[BlobInfo], ids: Ids) -> None:
    orphans: list[PackInfo] = []
    heads = await blobs.get_ranges([(i.name, 0, HEAD_READ) for i in infos])
    more: list[tuple[int, int]] = []
    for n, (info, head) in enumerate(zip(infos, heads, strict=True)):
        if head is None:
            continue  # deleted since the listing
        name = info.name[len(PACK_PREFIX) :]
        try:
            end = entries_end(head, info.name)
        except (CorruptFileError, UnsupportedFormatError) as exc:
            cat.bad[info.name] = str(exc)
            continue
        if end > info.size:
            cat.bad[info.name] = f"entries run past the pack's {info.size} bytes"
        elif end > len(head):
            more.append((n, end))
    if more:
        rest = await blobs.get_ranges([(infos[n].name, 0, end) for n, end in more])
        for (n, _), data in zip(more, rest, strict=True):
            heads[n] = data
    for info, head in zip(infos, heads, strict=True):
        name = info.name[len(PACK_PREFIX) :]
        if head is None or cat.knows(name):
            continue
        try:
            pack = parse_pack_head(name, head, info.size)
        except (CorruptFileError, UnsupportedFormatError) as exc:
            cat.bad[info.name] = str(exc)
            continue
        if pack.version == 2:
            cat.add(pack)
        else:
            orphans.append(pack)
    if orphans:
        await index_from_bytes(blobs, cat, orphans, ids)


async def index_from_bytes(blobs: BlobBackend, cat: Catalog, orphans: list[PackInfo], ids: Ids = PLAIN) -> None:
    """Packs whose ids only a segment holds, and no readable segment lists (it was damaged or
    deleted): decompress their chains and hash every frame to learn their objects. Slow,
    bounded by a chain at a time; the next merge of segments lists them again."""
    by_chain: dict[bytes, dict[int, PackInfo]] = {}
    for pack in orphans:
        by_chain.setdefault(pack.chain, {})[pack.seq] = pack
    for chain_id, lost in by_chain.items():
        members = {p.seq: p for p in cat.chain(chain_id)} | lost
        chain: list[PackInfo] = []
        for seq in range(max(lost) + 1):  # only a prefix whose heads continue one another
            member = members.get(seq)
            if member is None or (seq and not continues(member, chain[-1])):
                break
            chain.append(member)
        got = await blobs.get_blobs([p.blob for p in chain])
        cache = ChainCache(1 << 62)
        for pack in chain:
            try:
                cache.decompress([pack], got)
                raw = (cache.raws(chain_id, {pack.seq}) or {})[pack.seq]
                if pack.seq in lost:
                    pack.entries = [(ids.frame_id(raw[o : o + n]), o, n) for o, n in pack.spans]
            except (ChainDamage, CorruptionError) as exc:
                for rest in lost.values():
                    if not cat.knows(rest.name):
                        cat.bad[rest.blob] = f"no index segment lists it, and its chain cannot be read: {exc}"
                break
            if pack.seq in lost:
                cat.add(pack)
                cat.orphans.append(pack.blob)


def continues(pack: PackInfo, before: PackInfo) -> bool:
    """Whether ``pack`` follows ``before`` in their chain (§6.1)."""
    return pack.prev == bytes.fromhex(before.name) and pack.chain_raw == before.chain_raw + before.raw_len


__all__ = ["LIST_ATTEMPTS", "add_segments", "continues", "index_from_bytes", "list_packs", "load_catalog", "read_heads"]
