"""The pack store: castate's objects kept as format-2 packs on any blob backend.

``PackStore`` gives the repository the object-level contract of ``castate.backends.base.Backend``
(get, has, put, delete objects; refs) and keeps them in a ``BlobBackend``: each save becomes
one immutable pack blob written in the same ``commit`` call that moves its refs, so a save
costs one round trip and one durability barrier on every engine.

Which objects exist and where is known from the packs' heads, read at open (two batched range
reads) and again when an object is asked for that this process has not seen. Two processes
never need to agree on that list, with one exception that would lose data: a save that skips
an object because it saw it stored, while gc deletes it. gc therefore moves the hidden ref
``castate/epoch`` to a new value before it deletes anything, and every save checks in its
``commit`` that the epoch is the one it loaded its list under; a save that loses rereads the
packs and tries again. The same check stops a writer from extending a compression chain whose
earlier packs gc replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard

from castate.backends.base import ANY, Backend, ObjectInfo, ReflogEntry, RefRepairReport, RefUpdate, _Any
from castate.backends.blob import BlobBackend
from castate.codec.zstdlimits import bounded_decompress, decompressor
from castate.errors import ConflictError, CorruptFileError, CorruptObjectError, UnsupportedFormatError
from castate.repository.packs.format import (
    CHAIN_MAX_RAW,
    ENTRY_SIZE,
    HEAD_SIZE,
    MAX_CHAIN_SETTING,
    PACK_MAX_RAW,
    PACK_PREFIX,
    READ_CHAIN_MAX,
    ZERO_ID,
    PackInfo,
    encode_pack,
    entries_end,
    pack_name,
    parse_pack_head,
)

EPOCH_REF = "castate/epoch"
HIDDEN_PREFIX = "castate/"
QUARANTINE_PREFIX = "quarantine/"
HEAD_READ = 4096  # bytes read from each new pack at open: the head and, usually, every entry
ZSTD_LEVEL = 3
SAVE_ATTEMPTS = 4
CONSOLIDATE_MIN = 16  # packs in a chain before gc merges them into one
MAX_STREAMS = 16


@dataclass(slots=True)
class _Chain:
    """A writer's open chain: its zstd stream and where it stands."""

    id: bytes
    cobj: Any
    seq: int = 0
    raw: int = 0
    last: bytes = ZERO_ID


@dataclass(slots=True)
class _Decoded:
    """A reader's decompressed prefix of one chain."""

    dobj: Any  # positioned after pack ``done - 1``; None when it cannot continue
    raws: dict[int, bytes] = field(default_factory=dict)  # seq -> raw bytes
    done: int = 0
    size: int = 0


class PackStore(Backend):
    """Objects in format-2 packs over a ``BlobBackend``; refs passed through.

    ``chain_max`` bounds the raw bytes of one compression chain (what reading one object may
    decompress); ``cache_bytes`` the decompressed chains kept for reads."""

    packs_objects = True

    def __init__(
        self,
        blobs: BlobBackend,
        *,
        chain_max: int = CHAIN_MAX_RAW,
        cache_bytes: int = 64 << 20,
        allow_legacy: bool = False,
    ) -> None:
        self.blobs = blobs
        self.location = blobs.location
        if not 0 < chain_max <= MAX_CHAIN_SETTING:
            raise ValueError(f"chain_max must be between 1 and {MAX_CHAIN_SETTING} bytes")
        self.chain_max = chain_max
        self.cache_bytes = cache_bytes
        self.allow_legacy = allow_legacy
        self._packs: dict[str, PackInfo] = {}
        self._bad_packs: dict[str, str] = {}  # pack name -> why its head could not be read
        self._index: dict[bytes, tuple[PackInfo, int, int]] = {}
        self._chains: dict[bytes, dict[int, PackInfo]] = {}
        self._indexed: dict[bytes, int] = {}  # chain -> how many of its first packs are indexed
        self._writing: OrderedDict[str, _Chain] = OrderedDict()
        self._cache: OrderedDict[bytes, _Decoded] = OrderedDict()
        self._cache_size = 0
        self._epoch: bytes | None = None
        self._lock = asyncio.Lock()
        self._opened = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._opened:
            return
        await self.blobs.open()
        if not self.allow_legacy:
            legacy = await self.blobs.legacy_objects()
            if legacy:
                await self.blobs.close()
                raise UnsupportedFormatError(
                    f"store {self.location} holds {legacy} objects in castate's format 1; move them into "
                    "format-2 packs once with `castate --store URL upgrade` (docs/cli.md)"
                )
        await self._reload()
        self._opened = True

    async def close(self) -> None:
        self._writing.clear()
        self._cache.clear()
        self._cache_size = 0
        self._opened = False
        await self.blobs.close()

    # -- the list of packs ------------------------------------------------------------------------

    async def _reload(self) -> None:
        """Forget what is known and read every pack's head again (after gc moved the epoch)."""
        self._packs.clear()
        self._bad_packs.clear()
        self._index.clear()
        self._chains.clear()
        self._indexed.clear()
        self._writing.clear()
        self._epoch = await self.blobs.get_ref(EPOCH_REF)
        await self._refresh()

    async def _refresh(self) -> list[bytes]:
        """Read the heads of packs this store has not seen; returns the ids they hold."""
        infos = await self.blobs.list_blobs(PACK_PREFIX)
        new = [i for i in infos if i.name[len(PACK_PREFIX) :] not in self._packs]
        new = [i for i in new if i.name[len(PACK_PREFIX) :] not in self._bad_packs]
        if not new:
            return []
        heads = await self.blobs.get_ranges([(i.name, 0, HEAD_READ) for i in new])
        more: list[tuple[int, int]] = []
        for n, (info, head) in enumerate(zip(new, heads, strict=True)):
            if head is None:
                continue
            try:
                end = entries_end(head, info.name)
            except (CorruptFileError, UnsupportedFormatError) as exc:
                self._bad_packs[info.name[len(PACK_PREFIX) :]] = str(exc)
                continue
            if end > len(head):
                more.append((n, end))
        if more:
            rest = await self.blobs.get_ranges([(new[n].name, 0, end) for n, end in more])
            for (n, _), data in zip(more, rest, strict=True):
                heads[n] = data
        added: list[bytes] = []
        for info, head in zip(new, heads, strict=True):
            name = info.name[len(PACK_PREFIX) :]
            if head is None or name in self._bad_packs:
                continue
            try:
                pack = parse_pack_head(name, head, info.size)
            except (CorruptFileError, UnsupportedFormatError) as exc:
                self._bad_packs[name] = str(exc)
                continue
            self._add_pack(pack)
            added.extend(oid for oid, _, _ in pack.entries)
        return added

    def _add_pack(self, pack: PackInfo) -> None:
        """Know a pack; its objects count as stored only once its chain is unbroken up to it.

        A pack after a gap is garbage that cannot be read: the pack of a commit that failed
        after gc had replaced the packs its chain continued (a blob backend may keep the blobs
        of a failed commit). Listing its objects as stored would let a save skip them."""
        self._packs[pack.name] = pack
        members = self._chains.setdefault(pack.chain, {})
        members[pack.seq] = pack
        seq = self._indexed.get(pack.chain, 0)
        index = self._index
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
        self._indexed[pack.chain] = seq

    def _drop_pack(self, pack: PackInfo) -> None:
        self._packs.pop(pack.name, None)
        chain = self._chains.get(pack.chain)
        if chain is not None and chain.get(pack.seq) is pack:
            del chain[pack.seq]
            if not chain:
                del self._chains[pack.chain]
        if self._indexed.get(pack.chain, 0) > pack.seq:
            self._indexed[pack.chain] = pack.seq
        for oid, _, _ in pack.entries:
            place = self._index.get(oid)
            if place is not None and place[0] is pack:
                del self._index[oid]
        self._forget_chain(pack.chain)

    # -- reading ----------------------------------------------------------------------------------

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        wanted = list(ids)
        if any(oid not in self._index for oid in wanted):
            await self._refresh()
        places = {oid: self._index[oid] for oid in wanted if oid in self._index}
        if not places:
            return {}
        need: dict[bytes, int] = {}  # chain -> the highest seq needed
        for pack, _, _ in places.values():
            if need.get(pack.chain, -1) < pack.seq:
                need[pack.chain] = pack.seq
        raws = await self._chain_raws(need, places)
        out: dict[bytes, Any] = {}
        for oid, (pack, off, length) in places.items():
            raw = raws.get((pack.chain, pack.seq))
            if raw is None:
                continue
            out[oid] = memoryview(raw)[off : off + length]
        return out

    async def _chain_raws(
        self, need: dict[bytes, int], places: dict[bytes, tuple[PackInfo, int, int]]
    ) -> dict[tuple[bytes, int], bytes]:
        """Raw bytes of every pack whose objects are asked for, decompressing chain prefixes
        with one ``get_blobs`` call for all the packs not yet decompressed."""
        fetch: dict[bytes, list[PackInfo]] = {}
        for chain_id, top in need.items():
            item = self._cache.get(chain_id)
            members = self._chains.get(chain_id, {})
            if item is not None and all(p.seq in item.raws for p, _, _ in places.values() if p.chain == chain_id):
                continue
            start = item.done if item is not None and item.dobj is not None else 0
            order = [members.get(s) for s in range(start, top + 1)]
            if any(p is None for p in order):
                missing = next(s for s, p in zip(range(start, top + 1), order, strict=True) if p is None)
                self._unreadable(places, chain_id, f"pack {missing} of its compression chain is missing")
            fetch[chain_id] = [p for p in order if p is not None]
        blobs = await self.blobs.get_blobs([p.blob for packs in fetch.values() for p in packs]) if fetch else {}
        for chain_id, packs in fetch.items():
            item = self._cache.get(chain_id)
            if item is None or item.dobj is None or (packs and packs[0].seq != item.done):
                if item is not None:
                    self._cache_size -= item.size
                item = _Decoded(decompressor().decompressobj())
                self._cache[chain_id] = item
            for pack in packs:
                data = blobs.get(pack.blob)
                reason = self._check_blob(pack, data)
                if reason is None:
                    assert data is not None
                    try:
                        raw = bounded_decompress(
                            item.dobj, memoryview(data)[pack.body_off :], pack.raw_len, pack.seq == 0
                        )
                    except zstandard.ZstdError as exc:
                        raw, reason = None, f"zstd: {exc}"
                    if raw is None or len(raw) != pack.raw_len:
                        reason = reason or "decompressed to a wrong size"
                if reason is not None:
                    self._forget_chain(chain_id)
                    self._unreadable(places, chain_id, f"pack {pack.name}: {reason}", from_seq=pack.seq)
                assert raw is not None
                item.raws[pack.seq] = raw
                item.size += len(raw)
                self._cache_size += len(raw)
                item.done = pack.seq + 1
        out: dict[tuple[bytes, int], bytes] = {}
        for pack, _, _ in places.values():
            item = self._cache.get(pack.chain)
            if item is not None and pack.seq in item.raws:
                out[(pack.chain, pack.seq)] = item.raws[pack.seq]
                self._cache.move_to_end(pack.chain)
        self._evict(keep=set(need))
        return out

    @staticmethod
    def _check_blob(pack: PackInfo, data: bytes | None) -> str | None:
        if data is None:
            return "the pack is missing"
        if len(data) != pack.size or pack_name(data) != pack.name:
            return "the pack's bytes do not match its name"
        return None

    def _unreadable(
        self, places: dict[bytes, tuple[PackInfo, int, int]], chain_id: bytes, why: str, from_seq: int = 0
    ) -> None:
        """Name the first asked-for object that a damaged chain makes unreadable (callers such as
        fsck drop it and ask again for the rest)."""
        for oid, (pack, _, _) in places.items():
            if pack.chain == chain_id and pack.seq >= from_seq:
                raise CorruptObjectError(oid.hex(), why)
        raise CorruptFileError(self.location, why)  # pragma: no cover - a chain is only read for an object

    def _forget_chain(self, chain_id: bytes) -> None:
        item = self._cache.pop(chain_id, None)
        if item is not None:
            self._cache_size -= item.size

    def _evict(self, keep: set[bytes]) -> None:
        for chain_id in list(self._cache):
            if self._cache_size <= self.cache_bytes:
                break
            if chain_id not in keep:
                self._forget_chain(chain_id)

    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        wanted = list(ids)
        if any(oid not in self._index for oid in wanted):
            await self._refresh()
        return {oid for oid in wanted if oid in self._index}

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        await self._refresh()
        seen: dict[bytes, ObjectInfo] = {}
        for pack in list(self._packs.values()):
            for oid, _, length in pack.entries:
                old = seen.get(oid)
                if old is None or old.time_ns < pack.time_ns:
                    seen[oid] = ObjectInfo(oid, length, pack.time_ns)
        for info in seen.values():
            yield info

    # -- writing ----------------------------------------------------------------------------------

    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        return await self.commit(items, (), stream=stream)

    async def commit(
        self,
        items: Sequence[tuple[bytes, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        stream: str = "",
        history: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        all_items = [*items, *history]
        if not all_items:
            if updates:
                await self.blobs.commit((), updates, message=message)
            return 0
        async with self._lock:
            for _ in range(SAVE_ATTEMPTS):
                packs, made, count = self._build(all_items, stream)
                try:
                    await self.blobs.commit(
                        [(p.blob, data) for p, data in packs], updates, message=message, checks={EPOCH_REF: self._epoch}
                    )
                except ConflictError as exc:
                    self._writing.pop(stream, None)
                    if exc.ref != EPOCH_REF:
                        raise
                    await self._reload()  # gc ran: what this process knew may be gone
                    continue
                except BaseException:
                    self._writing.pop(stream, None)  # the stream's compressor ran ahead of the store
                    raise
                for (pack, _), raw in zip(packs, made, strict=True):
                    self._add_pack(pack)
                    item = _Decoded(None, {pack.seq: raw}, pack.seq + 1, len(raw))
                    old = self._cache.get(pack.chain)
                    if old is not None:
                        old.raws[pack.seq] = raw
                        old.size += len(raw)
                        old.dobj = None
                    else:
                        self._cache[pack.chain] = item
                    self._cache_size += len(raw)
                self._evict(keep=set())
                return count
        raise ConflictError(f"gc ran during {SAVE_ATTEMPTS} attempts to save", EPOCH_REF)

    def _build(
        self, items: Sequence[tuple[bytes, bytes]], stream: str
    ) -> tuple[list[tuple[PackInfo, bytes]], list[bytes], int]:
        """The packs holding the objects of ``items`` that the store lacks, and their raw bytes."""
        fresh: dict[bytes, bytes | memoryview] = {}
        for oid, frame in items:
            if oid not in self._index and oid not in fresh:
                fresh[oid] = frame
        groups: list[list[tuple[bytes, bytes | memoryview]]] = [[]]
        size = 0
        for oid, frame in fresh.items():
            if size and size + len(frame) > PACK_MAX_RAW:
                groups.append([])
                size = 0
            groups[-1].append((oid, frame))
            size += len(frame)
        out: list[tuple[PackInfo, bytes]] = []
        raws: list[bytes] = []
        if not fresh:
            return out, raws, 0
        now = time.time_ns()
        for group in groups:
            raw = b"".join(f for _, f in group)
            chain = self._chain(stream, len(raw))
            body = chain.cobj.compress(raw) + chain.cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            data = encode_pack(
                group, body, chain=chain.id, seq=chain.seq, prev=chain.last, raw_len=len(raw),
                chain_raw=chain.raw, time_ns=now,
            )  # fmt: skip
            name = pack_name(data)
            pack = parse_pack_head(name, memoryview(data)[: HEAD_SIZE + ENTRY_SIZE * len(group)], len(data))
            out.append((pack, data))
            raws.append(raw)
            chain.seq += 1
            chain.raw += len(raw)
            chain.last = bytes.fromhex(name)
        return out, raws, len(fresh)

    def _chain(self, stream: str, incoming: int) -> _Chain:
        chain = self._writing.get(stream)
        if chain is None or (chain.raw and chain.raw + incoming > self.chain_max):
            cobj = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False).compressobj()
            chain = self._writing[stream] = _Chain(os.urandom(16), cobj)
        self._writing.move_to_end(stream)
        while len(self._writing) > MAX_STREAMS:
            self._writing.popitem(last=False)
        return chain

    # -- deleting (gc and fsck) ----------------------------------------------------------------------

    async def delete_objects(self, ids: Collection[bytes]) -> int:
        return await self._rewrite(set(ids), quarantine=False)

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        return await self._rewrite(set(ids), quarantine=True)

    async def maintain(self) -> None:
        """Merge each chain of at least ``CONSOLIDATE_MIN`` packs into one pack (gc calls this
        under ``gc_exclusive``): the same objects in far fewer blobs, so opening the store
        reads fewer pack heads and engines keep fewer rows or keys."""
        await self._rewrite(set(), quarantine=False, consolidate=True)

    async def _rewrite(self, doomed: set[bytes], *, quarantine: bool, consolidate: bool = False) -> int:
        """Remove ``doomed`` objects: every chain holding one (and with ``consolidate`` every long
        chain) is replaced by new packs holding the rest of its objects, then deleted. Callers
        hold ``gc_exclusive``."""
        async with self._lock:
            await self._reload()
            chains = {p.chain for p in self._packs.values() if any(oid in doomed for oid, _, _ in p.entries)}
            if consolidate:
                chains.update(c for c, members in self._chains.items() if len(members) >= CONSOLIDATE_MIN)
            if not chains:
                return 0
            # Every save that loaded its list of packs before this point now fails its epoch
            # check and reloads: none can skip an object deleted below or extend a chain replaced.
            self._epoch = os.urandom(32)
            await self.blobs.commit((), [RefUpdate(EPOCH_REF, self._epoch, ANY)], message="gc: packs rewritten")
            removed: set[bytes] = set()
            for chain_id in chains:
                packs = sorted(self._chains.get(chain_id, {}).values(), key=lambda p: p.seq)
                keep = {oid: None for p in packs for oid, _, _ in p.entries if oid not in doomed}
                removed.update(oid for p in packs for oid, _, _ in p.entries if oid in doomed)
                try:
                    frames = await self.get_objects(list(keep)) if keep else {}
                except CorruptObjectError:
                    frames = await self._salvage(list(keep))
                if quarantine:
                    got = await self.blobs.get_blobs([p.blob for p in packs])
                    await self.blobs.put_blobs([(QUARANTINE_PREFIX + k, v) for k, v in got.items()])
                for p in packs:
                    self._drop_pack(p)  # so the objects kept are written again, not found present
                if frames:
                    packed, _, _ = self._build([(oid, bytes(f)) for oid, f in frames.items()], f"gc {chain_id.hex()}")
                    await self.blobs.put_blobs([(p.blob, data) for p, data in packed])
                await self.blobs.delete_blobs([p.blob for p in packs])
            # And again once the packs are gone: a writer that listed the packs between the first
            # move and the deletes may hold the deleted ones in its list.
            self._epoch = os.urandom(32)
            await self.blobs.commit((), [RefUpdate(EPOCH_REF, self._epoch, ANY)], message="gc: packs rewritten")
            self._writing.clear()
            await self._reload()
            return len(removed - set(self._index))

    async def _salvage(self, ids: list[bytes]) -> dict[bytes, Any]:
        """The readable objects among ``ids`` of a damaged chain, one unreadable id dropped at a time."""
        todo = list(ids)
        while todo:
            try:
                return await self.get_objects(todo)
            except CorruptObjectError as exc:
                todo.remove(bytes.fromhex(exc.object_id))
        return {}

    # -- refs: passed through, without the store's own ----------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self.blobs.get_refs(names)

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        refs = await self.blobs.list_refs(prefix)
        return {n: v for n, v in refs.items() if not n.startswith(HIDDEN_PREFIX)}

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        await self.blobs.commit((), updates, message=message)

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        return await self.blobs.copy_ref(source, target, expected=expected, message=message)

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        entries = await self.blobs.reflog(name)
        return [e for e in entries if not e.name.startswith(HIDDEN_PREFIX)]

    async def expire_reflog(self, before_ns: int) -> int:
        return await self.blobs.expire_reflog(before_ns)

    # -- maintenance ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        async with self.blobs.gc_exclusive():
            yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        async with self.blobs.gc_shared():
            yield

    async def now_ns(self) -> int:
        return await self.blobs.now_ns()

    async def reclaim(self) -> None:
        await self.blobs.reclaim()

    async def check_storage(self) -> list[str]:
        await self._refresh()
        lines = [f"pack {name}: {why}" for name, why in sorted(self._bad_packs.items())]
        for chain_id, members in self._chains.items():
            if members and sorted(members) != list(range(max(members) + 1)):
                lines.append(f"compression chain {chain_id.hex()}: packs missing before seq {max(members)}")
        return lines + await self.blobs.check_storage()

    async def repair_refs(self) -> RefRepairReport:
        return await self.blobs.repair_refs()

    async def stats(self) -> dict[str, int]:
        await self._refresh()
        out = dict(await self.blobs.stats())
        out["packs"] = len(self._packs)
        out["objects"] = len(self._index)
        out["object_bytes"] = sum(length for _, _, length in self._index.values())
        out["pack_bytes"] = sum(p.size for p in self._packs.values())
        return out

    # -- format 1 -----------------------------------------------------------------------------------

    async def import_frames(self, batches: AsyncIterator[list[tuple[bytes, bytes]]] | Iterable[Any]) -> int:
        """Write (id, frame) batches into packs (``castate upgrade``); returns how many objects were new."""
        written = 0
        async for batch in batches:  # type: ignore[union-attr]
            written += await self.put_objects(batch, stream="upgrade")
        return written


__all__ = ["EPOCH_REF", "PackStore"]
