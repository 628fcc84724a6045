"""The pack store: castate's objects kept as format-2 packs on any blob backend.

``PackStore`` gives the repository the object-level contract of ``castate.backends.base.Backend``
(get, has, put, delete objects; refs) and keeps them in a ``BlobBackend``: each save becomes
one immutable pack blob written in the same ``commit`` call that moves its refs, so a save
costs one round trip and one durability barrier on every engine.

Which objects exist and where is a ``Catalog`` built at open from the index segments (each save
commits one with its pack; writers merge them as they go), and grown when an object is asked
for that this process has not seen. Packs only disappear when gc or fsck rewrites chains,
and those first move the hidden ref ``castate/epoch`` (to a value marked "in progress") and
move it again when done. Everything that acts on what this process believes
stored checks the epoch: a save in its ``commit`` (it retries on a fresh catalog), a reader
that finds a pack missing, and ``gc_shared`` (imports, forks and restores that check objects
before they move refs). docs/format.md §6.3 has the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

from castate.backends.base import ANY, Backend, ObjectInfo, ReflogEntry, RefRepairReport, RefUpdate, _Any
from castate.backends.blob import BlobBackend
from castate.codec.objects import Ids
from castate.errors import (
    ConflictError,
    CorruptFileError,
    CorruptionError,
    CorruptObjectError,
    StoreError,
    UnsupportedFormatError,
)
from castate.keys import Secret
from castate.repository.crypto.sealed import SealedBlobs
from castate.repository.crypto.slots import MARKER_REF, StoreKeys, open_keys
from castate.repository.packs.catalog import Catalog, Place
from castate.repository.packs.chains import ChainCache, ChainDamage, WriterChains
from castate.repository.packs.discovery import LIST_ATTEMPTS, add_segments, list_packs, load_catalog
from castate.repository.packs.format import (
    CHAIN_MAX_RAW,
    MAX_CHAIN_SETTING,
    PACK_MAX_RAW,
    PACK_PREFIX,
    PackInfo,
    make_pack,
    parse_pack_head,
)
from castate.repository.packs.layout import LONG_CHAIN_RAW, LONG_LIVED, UNKNOWN, first_use, last_uses, lifetime_class
from castate.repository.packs.segments import (
    INDEX_PREFIX,
    Segment,
    make_segment,
    parse_segment,
)

EPOCH_REF = "castate/epoch"
HIDDEN_PREFIX = "castate/"
QUARANTINE_PREFIX = "quarantine/"
GC_RUNNING = 1  # first byte of an epoch that gc set before rewriting (and sets to GC_DONE after)
GC_DONE = 0
# A gc that failed or died: segments may name packs it deleted. Readers list the packs at
# every load until a gc completes (it writes one segment from a listing, then GC_DONE).
GC_DIRTY = 2
STALE_EPOCH = b"stale"  # no stored epoch has this value: a commit checking it conflicts and reloads
SAVE_ATTEMPTS = 4
CONSOLIDATE_MIN = 16  # packs in a chain before gc regroups it
REGROUP_PACK = 128 << 10  # raw bytes per pack of the chains gc regroups by lifetime
INDEX_AFTER = 16  # index segments (one per save, merged as they go) before a writer merges them


# Set in the task that holds gc_exclusive (and the tasks it starts): its own catalog reloads
# must not wait for the gc it is running.
_IN_GC: contextvars.ContextVar[bool] = contextvars.ContextVar("castate_in_gc", default=False)


def new_epoch(state: int) -> bytes:
    return bytes((state,)) + os.urandom(31)


class PackStore(Backend):
    """Objects in format-2 packs over a ``BlobBackend``; refs passed through.

    ``chain_max`` bounds the raw bytes of one compression chain (what reading one object may
    decompress); ``cache_bytes`` the decompressed chains kept for reads; ``index_after`` the
    index segments a writer knows of before a save merges them."""

    packs_objects = True

    def __init__(
        self,
        blobs: BlobBackend,
        *,
        chain_max: int = CHAIN_MAX_RAW,
        cache_bytes: int = 64 << 20,
        allow_legacy: bool = False,
        index_after: int = INDEX_AFTER,
        secret: Secret | None = None,
    ) -> None:
        if not 0 < chain_max <= MAX_CHAIN_SETTING:
            raise ValueError(f"chain_max must be between 1 and {MAX_CHAIN_SETTING} bytes")
        self.blobs = self.raw = blobs
        self.secret = secret
        self.keys: StoreKeys | None = None  # an encrypted store's, once open
        self.location = blobs.location
        self.chain_max = chain_max
        self.cache_bytes = cache_bytes
        self.allow_legacy = allow_legacy
        self.index_after = index_after
        self._cat = Catalog()
        self._writing = WriterChains(chain_max)
        self._cache = ChainCache(cache_bytes)
        self._epoch: bytes | None = None
        # Lock order: ``_lock`` (this process's saves and gc), then the backend's gc lock.
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
        try:
            await self._unlock()
        except BaseException:
            await self.raw.close()
            raise
        await self._reload()
        self._opened = True

    async def _unlock(self) -> None:
        """Read the key slots: an encrypted store is read and written through ``SealedBlobs``
        with its object ids keyed; a new, empty store given a secret becomes encrypted."""
        keys = await open_keys(self.raw, self.secret)
        if keys is None:
            return
        self.keys = keys
        self.ids = keys.ids
        self.blobs = SealedBlobs(self.raw, keys)

    async def close(self) -> None:
        self._writing.clear()
        self._cache.clear()
        self._opened = False
        try:
            await self.raw.close()
        finally:
            self.blobs = self.raw

    # -- the catalog ---------------------------------------------------------------------------

    async def _reload(self, *, shared_held: bool = False) -> None:
        """Build a new catalog from the index segments and swap it in (after gc moved the epoch).

        The epoch is read before the listing: a gc that starts later moves it, and the saves
        this catalog lets skip objects then fail their check. An epoch marked "gc running" is
        waited out under ``gc_shared``; one left so by a gc that died is set to "dirty" here,
        since no gc can hold the lock meanwhile."""
        epoch = await self.blobs.get_ref(EPOCH_REF)
        if epoch is not None and epoch[:1] == bytes((GC_RUNNING,)) and not _IN_GC.get():
            if shared_held:
                epoch = await self._finish_dead_gc(epoch)
            else:
                async with self.blobs.gc_shared():
                    epoch = await self._finish_dead_gc(await self.blobs.get_ref(EPOCH_REF))
        cat = await load_catalog(self.blobs, self.ids)
        if cat.segments and (_IN_GC.get() or (epoch is not None and epoch[:1] == bytes((GC_DIRTY,)))):
            # gc and fsck act on every pack; after a gc that failed, segments may name packs
            # it deleted: a listing tells which are gone.
            await list_packs(self.blobs, cat, self.ids)
        self._cat = cat
        self._epoch = epoch
        self._writing.clear()
        self._cache.clear()

    async def _finish_dead_gc(self, epoch: bytes | None) -> bytes | None:
        if epoch is None or epoch[:1] != bytes((GC_RUNNING,)):
            return epoch
        dirty = new_epoch(GC_DIRTY)
        with contextlib.suppress(ConflictError):
            await self.blobs.commit((), [RefUpdate(EPOCH_REF, dirty, epoch)], message="gc: an interrupted gc closed")
        return await self.blobs.get_ref(EPOCH_REF)

    async def _refresh(self) -> None:
        """Learn what was written since the catalog was built (other writers' saves) and which
        packs the segments name are gone."""
        cat = self._cat
        for attempt in range(LIST_ATTEMPTS):
            if self._cat is not cat:
                return  # a reload swapped in a newer catalog meanwhile
            if await add_segments(self.blobs, cat, last=attempt + 1 == LIST_ATTEMPTS):
                await list_packs(self.blobs, cat, self.ids)
                return

    async def _epoch_moved(self) -> bool:
        return await self.blobs.get_ref(EPOCH_REF) != self._epoch

    # -- reading ----------------------------------------------------------------------------------

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, Any]:
        wanted = list(ids)
        try:
            got = await self._read(wanted)
            if len(got) < len(set(wanted)):  # written since the catalog was built, or absent
                await self._refresh()
                got.update(await self._read([oid for oid in wanted if oid not in got]))
            return got
        except ChainDamage as damage:
            # A pack gone missing means gc rewrote its chain since this catalog was built: read
            # again from a new one. Only when the epoch has not moved is it damage.
            if not damage.missing:
                raise _corrupt(damage) from None
            if not await self._epoch_moved():
                # Not gc now: a segment may name a pack that a gc which then died deleted. A
                # listing marks such packs gone; another copy may still be found.
                await self._refresh()
                try:
                    return await self._read(wanted)
                except ChainDamage as again:
                    raise _corrupt(again) from None
        await self._reload()
        try:
            return await self._read(wanted)
        except ChainDamage as damage:
            raise _corrupt(damage) from None

    async def _read(self, wanted: list[bytes]) -> dict[bytes, Any]:
        """Frames of the ``wanted`` objects the catalog knows, chain by chain: a chain is
        decompressed, its frames taken, and the cache held to its budget before the next, so
        one call holds at most one chain beyond the cache (frames are views into the cache's
        bytes while those fit in a quarter of its budget, copies after). The packs of every
        chain not cached are fetched in one call; chains cached then are read first, and one
        that the reading of others pushed out of the cache meanwhile is fetched again."""
        cat = self._cat
        by_chain: dict[bytes, dict[bytes, Place]] = {}
        for oid in wanted:
            place = cat.place(oid)
            if place is not None:
                by_chain.setdefault(place[0].chain, {})[oid] = place
        if not by_chain:
            return {}
        cached: list[bytes] = []
        names: list[str] = []
        for chain_id, places in by_chain.items():
            seqs = {p.seq for p, _, _ in places.values()}
            if self._cache.raws(chain_id, seqs) is None:
                names.extend(p.blob for p in self._cache.to_fetch(cat.chain(chain_id), max(seqs)))
            else:
                cached.append(chain_id)
        blobs = await self.blobs.get_blobs(names) if names else {}
        out: dict[bytes, Any] = {}
        pinned = 0
        for chain_id in [*cached, *(c for c in by_chain if c not in cached)]:
            places = by_chain[chain_id]
            seqs = {p.seq for p, _, _ in places.values()}
            try:
                raws = self._cache.raws(chain_id, seqs)
                if raws is None:
                    packs = self._cache.to_fetch(cat.chain(chain_id), max(seqs))
                    lacking = [p.blob for p in packs if p.blob not in blobs]
                    if lacking:
                        blobs.update(await self.blobs.get_blobs(lacking))
                    self._cache.decompress(packs, blobs)
                    for p in packs:
                        blobs.pop(p.blob, None)
                    raws = self._cache.raws(chain_id, seqs)
                if raws is None:
                    raise ChainDamage(0, "its compression chain could not be read", missing=True)
            except ChainDamage as damage:
                damage.oid = next((oid for oid, (p, _, _) in places.items() if p.seq >= damage.seq), None)
                raise
            views = pinned < self.cache_bytes // 4
            for oid, (pack, off, length) in places.items():
                frame = memoryview(raws[pack.seq])[off : off + length]
                out[oid] = frame if views else bytes(frame)
            if views:
                pinned += sum(len(r) for r in raws.values())
            self._cache.evict()
        return out

    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        wanted = list(ids)
        if not all(map(self._cat.has, wanted)):
            await self._refresh()
        has = self._cat.has
        return {oid for oid in wanted if has(oid)}

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every object in a pack, with the time the backend stored its newest copy (gc's grace
        runs on the backend's clock, never a writer's)."""
        await add_segments(self.blobs, self._cat, last=True)
        cat = self._cat
        infos = await list_packs(self.blobs, cat, self.ids)
        times = {i.name[len(PACK_PREFIX) :]: i.time_ns for i in infos}
        seen: dict[bytes, ObjectInfo] = {}
        for pack, oid, _, length in cat.entries():
            time_ns = times.get(pack.name)
            if time_ns is None:
                continue  # deleted since this catalog was built
            old = seen.get(oid)
            if old is None or old.time_ns < time_ns:
                seen[oid] = ObjectInfo(oid, length, time_ns)
        for obj in seen.values():
            yield obj

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
                await self._plain_commit((), updates, message=message, checks={})
            return 0
        async with self._lock:
            for _ in range(SAVE_ATTEMPTS):
                fresh = self._missing(all_items)
                packs = self._build(fresh, stream)
                cat = self._cat
                blobs, segment, absorbed, unindexed = self._save_blobs(packs)
                try:
                    await self._plain_commit(blobs, updates, message=message, checks={EPOCH_REF: self._epoch})
                except ConflictError as exc:
                    self._writing.drop(stream)
                    if exc.ref != EPOCH_REF:
                        raise
                    await self._reload()  # gc ran: what this process knew may be gone
                    continue
                except BaseException:
                    self._writing.drop(stream)  # the stream's compressor ran ahead of the store
                    raise
                for pack, _, raw in packs:
                    self._cache.put(pack, raw)
                self._cache.evict()
                if segment is not None and self._cat is cat:  # else gc ran since: a reload follows
                    if absorbed or unindexed:
                        self._cat = self._merged_catalog(cat, segment, absorbed, unindexed)
                        with contextlib.suppress(StoreError):
                            # The save is done; segments merged but not deleted only repeat
                            # places (merges drop repeated entries), and the next merge retries.
                            await self.blobs.delete_blobs([s.blob for s in absorbed if s.name != segment.name])
                    else:
                        cat.add_segment(segment)
                return len(fresh)
        raise ConflictError(f"gc ran during {SAVE_ATTEMPTS} attempts to save", EPOCH_REF)

    async def _plain_commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str,
        checks: dict[str, bytes | None],
    ) -> None:
        """The backend's commit; one that stores blobs, on a store this process opened plain,
        also checks that no other process has made the store encrypted since (its marker ref is
        still absent), so a process opened before that never writes plaintext objects beside
        sealed blobs. (A commit of ref moves alone has no checks, so it never waits for gc: a
        ref such a process moves there after is left out of listings and reported by fsck.)"""
        if self.keys is None and blobs:
            checks = {**checks, MARKER_REF: None}
        try:
            await self.blobs.commit(blobs, updates, message=message, checks=checks)
        except ConflictError as exc:
            if exc.ref == MARKER_REF and self.keys is None:
                raise StoreError(
                    f"store {self.location} was made encrypted after this process opened it: open it again, "
                    "with its key; nothing was written"
                ) from None
            raise

    def _missing(self, items: Sequence[tuple[bytes, bytes]]) -> dict[bytes, bytes | memoryview]:
        """The objects of ``items`` the catalog does not list as stored, each once."""
        has = self._cat.has
        fresh: dict[bytes, bytes | memoryview] = {}
        for oid, frame in items:
            if oid not in fresh and not has(oid):
                fresh[oid] = frame
        return fresh

    def _build(
        self, frames: dict[bytes, Any], stream: str, pack_max: int = PACK_MAX_RAW
    ) -> list[tuple[PackInfo, bytes, bytes]]:
        """(pack, its bytes, its raw bytes) for every pack holding ``frames``, continuing the
        stream's chain; a save of more than ``pack_max`` raw bytes is split."""
        groups: list[list[tuple[bytes, Any]]] = [[]]
        size = 0
        for oid, frame in frames.items():
            if size and size + len(frame) > pack_max:
                groups.append([])
                size = 0
            groups[-1].append((oid, frame))
            size += len(frame)
        out: list[tuple[PackInfo, bytes, bytes]] = []
        if not frames:
            return out
        now = time.time_ns()
        for group in groups:
            raw = b"".join(f for _, f in group)
            chain = self._writing.get(stream, len(raw))
            pack, data = make_pack(
                group, chain.compress(raw), chain=chain.id, seq=chain.seq, prev=chain.last, raw_len=len(raw),
                chain_raw=chain.raw, time_ns=now,
            )  # fmt: skip
            out.append((pack, data, raw))
            chain.advance(pack.name, len(raw))
        return out

    # -- index segments ---------------------------------------------------------------------------------

    def _with_segment(self, packs: list[tuple[PackInfo, bytes, bytes]]) -> list[tuple[str, bytes]]:
        """Blobs for packs gc writes: the packs, and one segment listing their objects."""
        if not packs:
            return []
        name, data = make_segment([(p, p.entries) for p, _, _ in packs])
        return [*((p.blob, blob) for p, blob, _ in packs), (INDEX_PREFIX + name, data)]

    def _save_blobs(
        self, packs: list[tuple[PackInfo, bytes, bytes]]
    ) -> tuple[list[tuple[str, bytes]], Segment | None, list[Segment], list[PackInfo]]:
        """The blobs of a save: its packs, and one segment listing their objects. Once the
        writer knows of ``index_after`` segments (or of readable packs no segment covers),
        that segment also merges the smallest ones, which are deleted after the commit: half
        the threshold's smallest, then every one not larger than what the merge holds so far
        (sizes double from one merge to the next, so each object is rewritten about log2(n)
        times and a store keeps about the threshold plus log2(n) segments). Returns the blobs,
        the segment, the segments it merges and the uncovered packs it covers."""
        if not packs:
            return [], None, [], []
        cat = self._cat
        mine = [p for p, _, _ in packs]
        absorbed: list[Segment] = []
        unindexed = [p for p in cat.packs.values() if cat.readable(p)]
        if len(cat.segments) + 1 >= self.index_after or unindexed:
            total = sum(len(p.entries) for p in (*unindexed, *mine))
            for segment in sorted(cat.segments, key=lambda s: s.n_entries):
                if len(absorbed) >= max(2, self.index_after // 2) and segment.n_entries > total:
                    break
                absorbed.append(segment)
                total += segment.n_entries
        name, data = self._merged(absorbed, [*unindexed, *mine])
        blobs = [*((p.blob, blob) for p, blob, _ in packs), (INDEX_PREFIX + name, data)]
        return blobs, parse_segment(name, data), absorbed, unindexed

    @staticmethod
    def _merged_catalog(cat: Catalog, merged: Segment, absorbed: list[Segment], unindexed: list[PackInfo]) -> Catalog:
        """``cat`` after a save's segment merged ``absorbed`` and covered ``unindexed`` (no I/O)."""
        covered = {p.blob for p in unindexed}
        fresh = Catalog(bad=dict(cat.bad), dead=set(cat.dead), orphans=[o for o in cat.orphans if o not in covered])
        for segment in cat.segments:
            if segment not in absorbed:
                fresh.add_segment(segment)
        fresh.add_segment(merged)
        for pack in cat.packs.values():
            if pack not in unindexed:
                fresh.add(pack)
        return fresh

    def _merged(self, segments: list[Segment], packs: list[PackInfo]) -> tuple[str, bytes]:
        """A segment covering what ``segments`` cover (without the packs known gone) and
        ``packs`` (with their entries). Segments naming no pack known gone are merged whole."""
        cat = self._cat
        table: list[tuple[PackInfo, list[tuple[bytes, int, int]]]] = [(p, list(p.entries)) for p in packs]
        whole: list[Segment] = []
        slow: list[Segment] = []
        for segment in segments:
            if cat.dead and not cat.dead.isdisjoint(segment.pack_names()):
                slow.append(segment)
            else:
                whole.append(segment)
        if slow:
            by_pack: dict[str, tuple[PackInfo, list[tuple[bytes, int, int]]]] = {}
            for segment in slow:
                for oid, key, off, length in segment.entries():
                    pack = segment.pack(key)
                    if pack is not None and pack.name not in cat.dead:
                        by_pack.setdefault(pack.name, (pack, []))[1].append((oid, off, length))
            table.extend(by_pack.values())
        return make_segment(table, whole)

    async def _index_everything(self) -> None:
        """Under ``gc_exclusive``: one segment covering every readable pack, and no other."""
        cat = self._cat
        if len(cat.segments) == 1 and not cat.packs and not cat.dead:
            return
        name, data = self._merged(cat.segments, [p for p in cat.packs.values() if cat.readable(p)])
        await self.blobs.put_blobs([(INDEX_PREFIX + name, data)])
        old = [i.name for i in await self.blobs.list_blobs(INDEX_PREFIX) if i.name != INDEX_PREFIX + name]
        await self.blobs.delete_blobs(old)

    # -- rewriting chains (gc and fsck) ----------------------------------------------------------------

    async def delete_objects(self, ids: Collection[bytes]) -> int:
        return await self._exclusively(set(ids), quarantine=False, consolidate=False)

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        return await self._exclusively(set(ids), quarantine=True, consolidate=False)

    async def maintain(self) -> None:
        """Regroup the chains of at least ``CONSOLIDATE_MIN`` packs (those saves wrote) by the
        lifetime of their objects (layout.py; gc calls this under ``gc_exclusive``): a restore
        then decompresses about what it needs wherever its checkpoint lies in the history,
        and the same objects sit in far fewer blobs, so engines keep fewer rows or keys."""
        await self._exclusively(set(), quarantine=False, consolidate=True)

    async def _exclusively(self, doomed: set[bytes], *, quarantine: bool, consolidate: bool) -> int:
        if _IN_GC.get():
            return await self._rewrite(doomed, quarantine=quarantine, consolidate=consolidate)
        async with self.gc_exclusive():
            return await self._rewrite(doomed, quarantine=quarantine, consolidate=consolidate)

    async def _rewrite(self, doomed: set[bytes], *, quarantine: bool, consolidate: bool) -> int:
        """Remove ``doomed`` objects (quarantine: the copies that fail verification): every chain
        holding one is replaced by new packs holding the rest of its objects, then deleted;
        with ``consolidate`` the long chains are replaced together, their objects regrouped
        by lifetime (``_regroup``). One index segment then covers every pack.
        Runs under ``gc_exclusive``."""
        await self._reload()
        cat = self._cat
        listed = self._doomed_by_chain(cat, doomed)
        chains = set(listed)
        if consolidate:
            chains.update(c for c in {p.chain for p in cat.all_packs()} if len(cat.members(c)) >= CONSOLIDATE_MIN)
        dirty = self._epoch is not None and self._epoch[:1] == bytes((GC_DIRTY,))
        if not chains:
            if consolidate or dirty:
                await self._index_everything()
                if dirty:
                    await self._move_epoch(new_epoch(GC_DONE))
                await self._reload()
            return 0
        present = {oid for ids in listed.values() for oid in ids}
        # Every save that built its catalog before this point now fails its epoch check; a
        # process that reads this value waits for gc to finish before it builds a new one.
        await self._move_epoch(new_epoch(GC_RUNNING))
        done = False
        try:
            await self._reload()  # under the lock, after the move: nothing committed since is missed
            cat = self._cat
            listed = self._doomed_by_chain(cat, doomed)
            spared = await self._intact_copies(listed) if quarantine else {}
            # Chains holding only doomed objects first: they free space without writing, so a
            # gc on a full disk frees them before a rewrite fails.
            kept = {pack.chain for pack, oid, _, _ in cat.entries() if pack.chain in chains and oid not in doomed}
            # Long chains (those saves wrote) are rewritten together, by the lifetime of their
            # objects (layout.py); the others each into a chain of its own, as they are.
            regroup = {c for c in kept if len(cat.members(c)) >= CONSOLIDATE_MIN} if consolidate else set()
            uses = await self._last_uses() if regroup else ([], {})  # before any pack goes
            for chain_id in sorted(chains - regroup, key=lambda c: c in kept):
                packs = cat.chain(chain_id)
                frames = await self._chain_frames(packs)
                keep: dict[bytes, Any] = {}
                for oid, frame in frames.items():
                    if oid not in doomed or spared.get(oid) == chain_id:
                        keep[oid] = frame
                if quarantine:
                    got = await self.blobs.get_blobs([p.blob for p in packs])
                    await self.blobs.put_blobs([(QUARANTINE_PREFIX + k, v) for k, v in got.items()])
                if keep:
                    self._writing.clear()
                    made = self._build(keep, f"gc {chain_id.hex()}")  # no dedup: a copy too many is harmless
                    written = self._with_segment(made)
                    try:
                        await self.blobs.put_blobs(written)
                    except BaseException:
                        with contextlib.suppress(Exception):  # leave no partial copy behind
                            await self.blobs.delete_blobs([name for name, _ in written])
                        raise
                await self.blobs.delete_blobs([p.blob for p in packs])
            if regroup:
                await self._regroup(cat, regroup, doomed, *uses)
            await self._reload()
            await self._index_everything()
            done = True
        finally:
            # Also after a failure: writers that built a catalog during the rewrite hold packs
            # that may be gone. A gc killed before this leaves GC_RUNNING, which _reload resolves.
            # Until the reload below is through, this catalog may name deleted packs: a save
            # that runs first must fail its check and reload, even if the moves fail.
            self._epoch = STALE_EPOCH
            await self._move_epoch(new_epoch(GC_DONE if done else GC_DIRTY))
            self._epoch = STALE_EPOCH
            self._writing.clear()
            await self._reload()
        has = self._cat.has
        return sum(1 for oid in present if not has(oid))

    async def _last_uses(self) -> tuple[list[int], dict[bytes, int]]:
        """The commits the refs name, as their sorted times, and for each object they reach the
        rank of the newest one reaching it (layout.py)."""
        refs = await self.blobs.list_refs()
        roots = [v for n, v in refs.items() if not n.startswith(HIDDEN_PREFIX)]
        return await last_uses(self.get_objects, self.ids, roots)

    async def _regroup(
        self, cat: Catalog, chain_ids: set[bytes], doomed: set[bytes], times: list[int], last: dict[bytes, int]
    ) -> None:
        """Rewrite the objects of ``chain_ids`` (but ``doomed``) into new chains, one set of
        chains per lifetime class (layout.py: ``times`` and ``last`` from ``_last_uses``),
        each in write order, then delete the old chains. Every new chain is written (with its
        segment) before any old one is deleted; a failure deletes what this call wrote."""
        # When each pack was written: the backend's stamp (index segment version 3 keeps no time
        # in its pack rows; a version-2 row's time is the writer's clock).
        stamped = {i.name[len(PACK_PREFIX) :]: i.time_ns for i in await self.blobs.list_blobs(PACK_PREFIX)}

        def written_ns(pack: PackInfo) -> int:
            return stamped.get(pack.name) or pack.time_ns

        order = sorted(chain_ids, key=lambda c: (written_ns(cat.chain(c)[0]), c))
        long_max = min(self.chain_max, LONG_CHAIN_RAW)
        groups: dict[int, dict[bytes, bytes]] = {}
        sizes: dict[int, int] = {}
        placed: set[bytes] = set()
        written: list[str] = []
        try:
            for chain_id in order:
                for pack, oid, frame in await self._chain_objects(cat.chain(chain_id)):
                    if oid in doomed or oid in placed:
                        continue
                    placed.add(oid)
                    use = last.get(oid)
                    k = UNKNOWN if use is None else lifetime_class(first_use(times, written_ns(pack)), use)
                    group = groups.setdefault(k, {})
                    if group and sizes[k] + len(frame) > (self.chain_max if k < LONG_LIVED else long_max):
                        written += await self._put_chain(group, f"gc class {k}")
                        group.clear()
                        sizes[k] = 0
                    group[oid] = bytes(frame)
                    sizes[k] = sizes.get(k, 0) + len(frame)
            for k, group in groups.items():
                if group:
                    written += await self._put_chain(group, f"gc class {k}")
        except BaseException:
            with contextlib.suppress(Exception):  # leave no partial copy behind
                await self.blobs.delete_blobs(written)
            raise
        await self.blobs.delete_blobs([p.blob for c in order for p in cat.chain(c)])

    async def _put_chain(self, frames: dict[bytes, bytes], stream: str) -> list[str]:
        """Store ``frames`` as a new chain of packs of ``REGROUP_PACK`` raw bytes (a read
        decompresses a chain only up to the pack it needs), with their segment; returns the
        blob names. Packs are at least an eighth of ``chain_max``, so that a chain has fewer
        than ``CONSOLIDATE_MIN`` packs (unless large frames fill them badly) and the next gc
        leaves it as it is."""
        self._writing.drop(stream)
        pack_max = max(REGROUP_PACK, -(-self.chain_max // (CONSOLIDATE_MIN // 2)))
        written = self._with_segment(self._build(frames, stream, pack_max))
        self._writing.drop(stream)
        names = [name for name, _ in written]
        try:
            await self.blobs.put_blobs(written)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.blobs.delete_blobs(names)
            raise
        return names

    @staticmethod
    def _doomed_by_chain(cat: Catalog, doomed: set[bytes]) -> dict[bytes, set[bytes]]:
        """The doomed objects each chain lists, in readable packs or not."""
        out: dict[bytes, set[bytes]] = {}
        if doomed:
            for pack, oid, _, _ in cat.entries():
                if oid in doomed:
                    out.setdefault(pack.chain, set()).add(oid)
        return out

    async def _move_epoch(self, value: bytes) -> None:
        await self.blobs.commit((), [RefUpdate(EPOCH_REF, value, ANY)], message="gc: packs rewritten")
        self._epoch = value

    async def _intact_copies(self, listed: dict[bytes, set[bytes]]) -> dict[bytes, bytes]:
        """For each doomed object stored more than once whose copies do not all verify, the chain
        of one copy that does: quarantine takes the damaged copies and keeps that one."""
        copies: dict[bytes, dict[bytes, bool]] = {}
        for chain_id, ids in listed.items():
            frames = await self._chain_frames(self._cat.chain(chain_id))
            for oid in ids:  # a copy in a pack that cannot be read counts as damaged
                frame = frames.get(oid)
                copies.setdefault(oid, {})[chain_id] = frame is not None and _verifies(self.ids, oid, frame)
        spared: dict[bytes, bytes] = {}
        for oid, found in copies.items():
            if not all(found.values()):
                intact = [c for c, ok in found.items() if ok]
                if intact:
                    spared[oid] = intact[0]
        return spared

    async def _chain_frames(self, packs: list[PackInfo]) -> dict[bytes, Any]:
        """Every object of a chain's packs that can be read (a damaged pack ends what can), in
        the chain's order; read from the packs themselves (their own heads), not through the
        index."""
        out: dict[bytes, Any] = {}
        for _, oid, frame in await self._chain_objects(packs):
            out.setdefault(oid, frame)
        return out

    async def _chain_objects(self, packs: list[PackInfo]) -> list[tuple[PackInfo, bytes, Any]]:
        """(pack, id, frame) of every object of a chain's packs that can be read, in the
        chain's order (see ``_chain_frames``)."""
        if not packs:
            return []
        blobs = await self.blobs.get_blobs([p.blob for p in packs])
        cache = ChainCache(1 << 62)
        out: list[tuple[PackInfo, bytes, Any]] = []
        for pack in packs:
            data = blobs.get(pack.blob)
            try:
                if data is None:
                    break
                head = parse_pack_head(pack.name, data, len(data))
                cache.decompress([pack], blobs)
                raw = (cache.raws(pack.chain, {pack.seq}) or {})[pack.seq]
                entries = head.entries or [(self.ids.frame_id(raw[o : o + n]), o, n) for o, n in head.spans]
            except (ChainDamage, CorruptionError, UnsupportedFormatError):
                break
            out.extend((pack, oid, raw[off : off + length]) for oid, off, length in entries)
        return out

    # -- refs: passed through, without the store's own ----------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self.blobs.get_refs(names)

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        refs = await self.blobs.list_refs(prefix)
        return {n: v for n, v in refs.items() if not n.startswith(HIDDEN_PREFIX)}

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        await self._plain_commit((), updates, message=message, checks={})

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
        """This process's saves, then every process's saves and shared holders, kept out."""
        async with self._lock, self.blobs.gc_exclusive():
            token = _IN_GC.set(True)
            try:
                yield
            finally:
                with contextlib.suppress(ValueError):  # left in another context: nothing to undo there
                    _IN_GC.reset(token)

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """The backend's shared gc lock, with a catalog no older than the last gc: callers check
        that objects exist and then move refs to them, so what they check must be current."""
        async with self.blobs.gc_shared():
            if not _IN_GC.get() and await self._epoch_moved():
                await self._reload(shared_held=True)
            yield

    async def now_ns(self) -> int:
        return await self.blobs.now_ns()

    async def reclaim(self) -> None:
        await self.blobs.reclaim()

    async def check_storage(self) -> list[str]:
        await self._refresh()
        return self._cat.problems() + await self.blobs.check_storage()

    async def repair_refs(self) -> RefRepairReport:
        return await self.blobs.repair_refs()

    async def stats(self) -> dict[str, int]:
        await self._refresh()
        cat = self._cat
        out = dict(await self.blobs.stats())
        sizes: dict[bytes, int] = {}
        for _, oid, _, length in cat.entries():
            sizes.setdefault(oid, length)
        out["packs"] = sum(1 for _ in cat.all_packs())
        out["index_segments"] = len(cat.segments)
        out["objects"] = len(sizes)
        out["object_bytes"] = sum(sizes.values())
        out["pack_bytes"] = sum(p.size for p in cat.all_packs())
        return out


def _corrupt(damage: ChainDamage) -> Exception:
    """The error for chain damage: CorruptObjectError naming the first asked-for object it makes
    unreadable (callers such as fsck drop that one and ask again for the rest)."""
    if damage.oid is None:
        return CorruptFileError(PACK_PREFIX, damage.why)
    return CorruptObjectError(damage.oid.hex(), damage.why)


def _verifies(ids: Ids, oid: bytes, frame: Any) -> bool:
    try:
        ids.decode_frame(oid, frame)
    except (CorruptionError, UnsupportedFormatError):
        return False
    return True


__all__ = ["EPOCH_REF", "PackStore"]
