"""The local-directory backend: castate's embedded default.

Layout of a store directory (docs/format.md has the bytes)::

    castate.json        format version and store id
    packs/*.pack        pack files (one writer each; a save appends one record)
    packs/*.pack.idx    with pack_index=True: a checked cache of each pack's scan (opens read it)
    objects/ab/cdef...  loose objects, one frame per file (readable; written in loose mode)
    refs.journal        every ref change (refs and reflog in one append-only file)
    refs.snapshot       a checked cache of the replayed refs (an open replays only the tail)
    locks/              lock files: refs.lock (journal writers), gc.lock (saves vs gc)

Every public method makes one hop to a worker thread, so a save, a ref update or one
tree level of a restore costs one hop whatever the number of objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from castate.backends.base import Backend, ObjectInfo, ReflogEntry, RefRepairReport, RefUpdate
from castate.backends.local import crashpoints, osio, packidx
from castate.backends.local import packs as packfmt
from castate.backends.local.files import (
    FILE_MODE,
    atomic_write,
    exposed,
    fsync_dir,
    make_dirs,
    naming,
    read_regular,
    store_dir,
    write_all,
)
from castate.backends.local.journal import RefJournal
from castate.backends.local.locks import FileLock
from castate.codec.objects import MAX_CONTENT
from castate.errors import (
    CastateError,
    CorruptFileError,
    CorruptObjectError,
    StoreError,
    StoreIOError,
    StoreNotFoundError,
    StoreWarning,
    UnsupportedFormatError,
)

STORE_VERSION = 1
CONFIG = "castate.json"
PACK_MAX = 256 << 20  # a writer starts a new pack file past this size
HISTORY_STREAM = "\x00history"  # appended to a stream's name: the chain of its commits

Durability = Literal["durable", "relaxed"]
T = TypeVar("T")
MAX_FRAME = MAX_CONTENT + 3  # the largest frame castate writes (a loose object file holds one)


def _bounded(groups: list[tuple[str, list[tuple[bytes, bytes]]]]) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
    """The groups with any group over ``RECORD_MAX_RAW`` split into several records of its
    stream, so no record exceeds what readers accept (docs/format.md §3.1)."""
    out: list[tuple[str, list[tuple[bytes, bytes]]]] = []
    for stream, items in groups:
        part: list[tuple[bytes, bytes]] = []
        size = 0
        for oid, frame in items:
            if part and size + len(frame) > packfmt.RECORD_MAX_RAW:
                out.append((stream, part))
                part, size = [], 0
            part.append((oid, frame))
            size += len(frame)
        out.append((stream, part))
    return out


class LegacyLocalBackend(Backend):
    """A format-1 local store (packs and loose objects of its own): read by ``castate upgrade``, which
    moves its objects into the format-2 blob store (``castate.backends.local.LocalBackend``)."""

    packs_objects = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        loose: bool = False,
        create: bool | None = True,
        cache_bytes: int = 64 << 20,
        lock_timeout: float = 60.0,
        pack_index: bool = False,
    ) -> None:
        if durability not in ("durable", "relaxed"):
            raise ValueError("durability must be 'durable' or 'relaxed'")
        self.root = Path(path)
        self.location = str(self.root)
        self.durable = durability == "durable"
        self.loose = loose
        self.create = create
        self._mutex = threading.RLock()
        self._cache = packfmt.ChainCache(cache_bytes)
        self._packs: dict[str, packfmt.Pack] = {}
        self._index: dict[bytes, packfmt.Pack] = {}
        self._chains = packfmt.ChainSet()
        self._pack_fd: int | None = None
        self._pack: packfmt.Pack | None = None
        self._pack_size = 0
        self._lock_timeout = lock_timeout
        self.pack_index = pack_index  # write packs/<name>.pack.idx (48 bytes per object): opens skip scans
        self._journal: RefJournal | None = None
        self._gc_lock: FileLock | None = None
        # True in a task (and the worker threads it starts) that holds gc_shared.
        self._shared_held: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"castate-local-gc-shared-{id(self)}", default=False
        )
        self._gc_seen: tuple[int, int] | None = None
        self._opened = False
        self.store_id = ""

    # -- paths ----------------------------------------------------------------------------

    @property
    def packs_dir(self) -> Path:
        return self.root / "packs"

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    def _loose_path(self, oid: bytes) -> Path:
        h = oid.hex()
        return self.objects_dir / h[:2] / h[2:]

    # -- lifecycle --------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._opened:
            raise StoreError(f"store {self.location} is not open")
        try:
            return await asyncio.to_thread(fn, *args)
        except CastateError:
            raise
        except OSError as exc:
            raise self._io_error(exc) from exc

    def _io_error(self, exc: OSError) -> StoreIOError:
        """The disk's error as castate's: same errno, the file it failed on (else the store)."""
        return StoreIOError(exc.errno or 0, exc.strerror or str(exc), exc.filename or self.location)

    async def open(self) -> None:
        if not self._opened:
            try:
                await asyncio.to_thread(self.open_sync)
            except CastateError:
                raise
            except OSError as exc:
                raise self._io_error(exc) from exc

    def open_sync(self) -> None:
        with self._mutex:
            if self._opened:
                return
            self._init_or_check()
            locks = self.root / "locks"
            self._journal = RefJournal(
                self.root / "refs.journal", FileLock(locks / "refs.lock", self._lock_timeout), self.durable
            )
            self._gc_lock = self._new_gc_lock()
            self._journal.refresh()
            self._gc_seen = self._gc_signature()
            self._refresh_packs()
            self._opened = True

    def _init_or_check(self) -> None:
        root = self.root
        config = root / CONFIG
        if not config.exists():
            if root.exists() and not root.is_dir():
                raise StoreError(f"{root} is not a directory")
            if (root / "refs.journal").exists():
                raise CorruptFileError(
                    str(config),
                    "the store config is missing, but the store's refs and objects are here: restore it "
                    "from a backup, or write it again as docs/format.md (section 3) shows",
                )
            if root.exists() and any(p.name not in ("packs", "objects", "locks") for p in root.iterdir()):
                raise StoreError(
                    f"{root} is not a castate store: it holds files but no {CONFIG} "
                    "(pick an empty or new directory, or import the old data with `castate import`)"
                )
            if self.create is not True:
                later = " (a save creates it)" if self.create is None else ""
                raise StoreNotFoundError(f"no castate store at {root}{later}")
            make_dirs(root)
            for d in (self.packs_dir, self.objects_dir, root / "locks"):
                store_dir(d)
            body = {
                "castate": "store",
                "version": STORE_VERSION,
                "id": os.urandom(16).hex(),
                "created_ns": time.time_ns(),
            }
            atomic_write(config, orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n", exclusive=True)
            RefJournal(root / "refs.journal", FileLock(root / "locks" / "refs.lock"), self.durable).create()
        try:
            meta = orjson.loads(config.read_bytes())
            version = meta["version"]
            if meta.get("castate") != "store" or type(version) is not int:
                raise ValueError("not a castate config")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(str(config), f"unreadable store config: {exc}") from None
        if version > STORE_VERSION:
            raise UnsupportedFormatError(
                f"store {root} has format version {version}; this castate reads up to {STORE_VERSION} (upgrade castate)"
            )
        self.store_id = str(meta.get("id", ""))
        for d in (self.packs_dir, self.objects_dir, root / "locks"):
            store_dir(d)
        if (root / "quarantine").exists() or (root / "quarantine").is_symlink():
            store_dir(root / "quarantine")
        loose = exposed([root, self.packs_dir, self.objects_dir, root / "locks", root / "quarantine", config])
        if loose:  # as ssh does with a key others can read: say so, the store still works
            warnings.warn(
                f"castate store {root} is open to other users: {', '.join(loose)}; castate makes stores "
                f"private (directories 0700, files 0600): run `chmod -R go-rwx {root}`",
                StoreWarning,
                stacklevel=2,
            )
        if not (root / "refs.journal").exists():
            raise CorruptFileError(
                str(root / "refs.journal"),
                "the ref journal (every ref and the reflog) is missing: restore it from a backup; "
                "the objects are intact, but no ref points at them",
            )

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        with self._mutex:
            self._seal()
            for p in self._packs.values():
                p.close()
            for lock in (self._journal.lock if self._journal else None, self._gc_lock):
                if lock is not None:
                    lock.close()
            self._opened = False

    # -- objects ------------------------------------------------------------------------------

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        return await self._run(self.get_objects_sync, ids)

    def get_objects_sync(self, ids: Collection[bytes]) -> dict[bytes, Any]:
        with self._mutex:
            out: dict[bytes, Any] = {}
            missing = self._read_many(ids, out)
            if missing:
                self._refresh_packs()
                self._read_many(missing, out)
            return out

    def _read_many(self, ids: Iterable[bytes], out: dict[bytes, Any]) -> list[bytes]:
        """Put the frames of ``ids`` into ``out``; returns the ids found nowhere.

        Packed objects are read chain by chain, record by record, so each chain is decompressed
        in one sweep whatever the order of ``ids``. A frame is a view into its record while the
        records viewed fit in a quarter of the chain cache's budget, and a copy after that, so a
        batch that spans the whole history (every commit of a long session) keeps at most that
        many decompressed bytes beyond the cache's own."""
        placed: list[tuple[str, int, int, int, int, bytes, packfmt.Pack]] = []
        missing: list[bytes] = []
        for oid in ids:
            pack = self._index.get(oid)
            if pack is not None:
                rec_off, off, n = packfmt.unpack_loc(pack.entries[oid])
                placed.append((pack.name, pack.records[rec_off].chain, rec_off, off, n, oid, pack))
                continue
            try:
                out[oid] = read_regular(self._loose_path(oid), MAX_FRAME)
            except FileNotFoundError:
                missing.append(oid)
            except CorruptFileError as exc:
                raise CorruptObjectError(oid.hex(), f"stored in {exc.path}: {exc.reason}") from None
        placed.sort(key=lambda p: (p[0], p[1], p[2]))
        budget = self._cache.max_bytes // 4
        current: tuple[packfmt.Pack, int] | None = None
        raw = b""
        for _, _, rec_off, off, n, oid, pack in placed:
            if current != (pack, rec_off):
                try:
                    raw = self._cache.record_bytes(pack, pack.records[rec_off])
                except FileNotFoundError:
                    missing.append(oid)  # removed by gc in another process: a refresh finds the new copy
                    current = None
                    continue
                except CorruptFileError as exc:
                    raise CorruptObjectError(oid.hex(), f"stored in {exc.path}: {exc.reason}") from None
                current = (pack, rec_off)
                budget -= len(raw)
            out[oid] = memoryview(raw)[off : off + n] if budget >= 0 else raw[off : off + n]
        return missing

    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        return await self._run(self.has_objects_sync, ids)

    def has_objects_sync(self, ids: Collection[bytes]) -> set[bytes]:
        with self._mutex:
            self._sync_with_gc()
            wanted = set(ids)
            found = {oid for oid in wanted if self._has(oid)}
            if len(found) < len(wanted):
                # Another writer's packs grew since this backend last looked (get_objects does the same).
                self._refresh_packs()
                found.update(oid for oid in wanted - found if self._has(oid))
            return found

    def _has(self, oid: bytes) -> bool:
        return oid in self._index or self._loose_path(oid).exists()

    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        return await self._run(self.put_objects_sync, items, stream)

    def put_objects_sync(
        self, items: Sequence[tuple[bytes, bytes]], stream: str = "", history: Sequence[tuple[bytes, bytes]] = ()
    ) -> int:
        """Store the new ones among ``items``, and among ``history`` in a chain of its own
        (commits: a log then reads them without decompressing states); one durability barrier."""
        with self._mutex:
            self._sync_with_gc()
            seen: set[bytes] = set()
            groups: list[tuple[str, list[tuple[bytes, bytes]]]] = []
            for group_stream, group in ((stream, items), (stream + HISTORY_STREAM, history)):
                new = []
                for oid, frame in group:
                    if oid not in seen and not self._has(oid):
                        seen.add(oid)
                        new.append((oid, frame))
                if new:
                    groups.append((group_stream, new))
            if not groups:
                return 0
            if self.loose:
                for _, new in groups:
                    for oid, frame in new:
                        self._write_loose(oid, frame)
            else:
                self._append(groups)
            return sum(len(new) for _, new in groups)

    def _write_loose(self, oid: bytes, frame: bytes) -> None:
        path = self._loose_path(oid)
        if not path.parent.exists() or path.parent.is_symlink():
            store_dir(path.parent)
            if self.durable:
                fsync_dir(path.parent.parent)
        atomic_write(path, bytes(frame), durable=self.durable, exclusive=True)

    def _append(self, groups: list[tuple[str, list[tuple[bytes, bytes]]]]) -> None:
        """Append one record per (stream, objects) group, in one write and one durability barrier."""
        if self._pack_fd is None or self._pack_size >= PACK_MAX:
            self._new_pack()
        assert self._pack is not None
        assert self._pack_fd is not None
        now = time.time_ns()
        offset = pos = self._pack_size
        pack = self._pack
        planned: list[tuple[packfmt.Chain, int, int, int, int, list[tuple[bytes, bytes]]]] = []
        try:
            parts = []
            for stream, items in _bounded(groups):
                raw = b"".join(bytes(f) for _, f in items)
                chain = self._chains.get(stream, len(raw))
                comp = chain.compress(raw)
                record = packfmt.encode_record(items, comp, len(raw), chain.last, now)
                # (chain, its previous record, this record's offset, raw size, compressed size, objects)
                planned.append((chain, chain.last, pos, len(raw), len(comp), items))
                # Advanced now, so a second record of the stream in this write continues this one
                # (a failed write seals the pack, which forgets the chains).
                chain.last = pos
                chain.raw += len(raw)
                parts.append(record)
                pos += len(record)
            data = b"".join(parts)
            with naming(pack.path):
                crashpoints.tear("pack-mid-record", self._pack_fd, data)
                write_all(self._pack_fd, data)
                crashpoints.reach("pack-before-sync")
                if self.durable:
                    osio.fdatasync(self._pack_fd)
                crashpoints.reach("pack-after-sync")
        except BaseException:
            # Never append after a record that may be torn, and never trust this one: it may be
            # whole yet not durable (after a failed fdatasync the kernel may drop its pages).
            pack.end = offset
            self._seal()
            raise
        ends = [p[2] for p in planned[1:]] + [pos]
        for (_, prev, rec_off, raw_len, comp_len, items), end in zip(planned, ends, strict=True):
            comp_start = end - 4 - comp_len
            chain_start = rec_off if prev == 0 else pack.records[prev].chain
            if prev == 0:
                pack.chains[rec_off] = [rec_off]
                pack.chain_raw[rec_off] = raw_len
            else:
                pack.chains[chain_start].append(rec_off)
                pack.chain_raw[chain_start] += raw_len
            pack.records[rec_off] = packfmt.RecInfo(rec_off, chain_start, now, raw_len, comp_start, comp_len)
            at = 0
            for oid, frame in items:
                pack.entries.setdefault(oid, packfmt.pack_loc(rec_off, at, len(frame)))
                self._index.setdefault(oid, pack)
                at += len(frame)
        self._pack_size = pos
        pack.scanned = pos
        self._maybe_index(pack)

    def _new_pack(self) -> None:
        self._seal()
        name = f"{time.time_ns():016x}-{os.urandom(6).hex()}.pack"
        path = self.packs_dir / name
        fd = osio.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # marks the pack active: gc leaves it alone
            crashpoints.reach("pack-created")
            with naming(path):
                write_all(fd, packfmt.PACK_HEADER)
                if self.durable:
                    osio.fsync(fd)
            if self.durable:
                fsync_dir(self.packs_dir)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                osio.unlink(path)  # an empty or headless pack is no use to anyone
            raise
        self._pack_fd = fd
        self._pack_size = len(packfmt.PACK_HEADER)
        self._pack = packfmt.Pack(path)
        self._packs[name] = self._pack

    def _seal(self) -> None:
        """Stop appending to the current pack (it stays readable), and index what it holds."""
        if self._pack is not None and len(self._pack.entries) > self._pack.indexed:
            self._write_index(self._pack)
        if self._pack_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pack_fd)
        self._pack_fd = None
        self._pack = None
        self._chains.clear()

    def _refresh_packs(self) -> None:
        try:
            names = {p.name for p in os.scandir(self.packs_dir) if p.name.endswith(".pack")}
        except FileNotFoundError:
            raise CorruptFileError(str(self.packs_dir), "the packs directory is missing") from None
        gone = [n for n in self._packs if n not in names]
        for name in gone:
            self._packs.pop(name).close()
            self._cache.forget_pack(name)
        if gone:
            self._index = {}
            for kept in self._packs.values():
                for oid in kept.entries:
                    self._index.setdefault(oid, kept)
        for name in sorted(names):
            pack = self._packs.get(name)
            new: list[bytes] = []
            if pack is None:
                pack = self._packs[name] = packfmt.Pack(self.packs_dir / name)
                if packidx.load(pack):
                    pack.indexed = len(pack.entries)
                    new = list(pack.entries)
            elif pack is self._pack:
                continue
            try:
                new += packfmt.scan_pack(pack)
            except FileNotFoundError:
                self._packs.pop(name).close()
                continue
            self._maybe_index(pack)
            found = dict.fromkeys(new, pack)
            if found.keys().isdisjoint(self._index.keys()):
                self._index.update(found)
            else:
                for oid in new:
                    self._index.setdefault(oid, pack)

    def _maybe_index(self, pack: packfmt.Pack) -> None:
        """Rewrite the pack's index once it lists a fifth (at least ``MIN_NEW``) fewer objects
        than the pack holds: an open then scans a bounded tail, for a few index bytes per object."""
        if self.pack_index and len(pack.entries) - pack.indexed >= max(packidx.MIN_NEW, pack.indexed // 4):
            self._write_index(pack)

    def _write_index(self, pack: packfmt.Pack) -> None:
        if self.pack_index and pack.end is None and packidx.write(pack):
            pack.indexed = len(pack.entries)

    async def delete_objects(self, ids: Collection[bytes]) -> int:
        return await self._run(self.delete_objects_sync, ids)

    def delete_objects_sync(self, ids: Collection[bytes]) -> int:
        """Remove objects: unlink loose files and rewrite the packs that hold the rest.

        A pack that another live writer is still appending to is left alone (its objects
        stay); the count says how many objects are gone.
        """
        doomed = set(ids)
        with self._mutex:
            self._refresh_packs()
            self._drop_orphan_indexes()
            if doomed:
                # Tell every other open backend that its pack index may list deleted objects
                # before deleting anything, so a gc killed midway has told them too; and again
                # below, for a backend that looked in between (reads take no gc lock).
                crashpoints.reach("gc-before-marker")
                self._bump_gc_marker()
            removed: set[bytes] = set()
            for oid in doomed:
                with contextlib.suppress(FileNotFoundError):
                    osio.unlink(self._loose_path(oid))
                    removed.add(oid)
            for pack in [p for p in self._packs.values() if not doomed.isdisjoint(p.entries)]:
                if pack is self._pack:
                    self._seal()
                if self._rewrite_pack(pack, doomed):
                    removed.update(doomed.intersection(pack.entries))
            if removed:
                self._index = {}
                for pack in self._packs.values():
                    for oid in pack.entries:
                        self._index.setdefault(oid, pack)
                self._bump_gc_marker()
            return len({oid for oid in removed if oid not in self._index})

    def _drop_orphan_indexes(self) -> None:
        """Remove indexes whose pack is gone (a gc or a reader stopped between the two unlinks)."""
        for entry in os.scandir(self.packs_dir):
            name = entry.name
            if (
                name.endswith(".pack" + packidx.SUFFIX)
                and not name.startswith(".")
                and not os.path.exists(entry.path[: -len(packidx.SUFFIX)])
            ):
                with contextlib.suppress(FileNotFoundError):
                    osio.unlink(entry.path)

    def _bump_gc_marker(self) -> None:
        atomic_write(self._gc_marker, os.urandom(16), durable=self.durable)
        self._gc_seen = self._gc_signature()

    @property
    def _gc_marker(self) -> Path:
        return self.root / "locks" / "gc.generation"

    def _gc_signature(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._gc_marker)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _sync_with_gc(self) -> None:
        """Forget packs that gc removed since this backend last looked (one stat).

        Dedup checks trust the in-memory pack index; after a gc in another process that
        index may still list objects gc deleted, and a save that skipped writing them would
        point at nothing. Saves run this under the shared gc lock, so gc cannot delete
        between the check and the ref move."""
        sig = self._gc_signature()
        if sig != self._gc_seen:
            self._gc_seen = sig
            # gc leaves the pack this backend appends to alone; seal it, so the next gc can
            # rewrite it and give back what it deleted there while this writer keeps saving.
            self._seal()
            self._refresh_packs()

    def _rewrite_pack(self, pack: packfmt.Pack, doomed: set[bytes]) -> bool:
        """Copy a pack's surviving objects into a new pack, then delete it; False if it is active."""
        fd = os.open(pack.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            keep = [oid for oid in pack.entries if oid not in doomed]
            by_record: dict[int, list[bytes]] = {}
            for oid in keep:
                by_record.setdefault(packfmt.unpack_loc(pack.entries[oid])[0], []).append(oid)
            batch: list[tuple[bytes, bytes]] = []
            size = 0
            damaged = bool(pack.damaged)
            for rec_off in sorted(by_record):
                try:
                    raw = self._cache.record_bytes(pack, pack.records[rec_off])
                except CorruptFileError:
                    damaged = True  # these objects cannot be read anywhere: nothing to copy
                    continue
                for oid in by_record[rec_off]:
                    _, off, n = packfmt.unpack_loc(pack.entries[oid])
                    batch.append((oid, raw[off : off + n]))
                    size += n
                if size >= packfmt.CHAIN_MAX_RAW // 4:
                    self._append([("gc", batch)])
                    batch, size = [], 0
            if batch:
                self._append([("gc", batch)])
            if keep and self._pack_fd is not None and self.durable:
                osio.fsync(self._pack_fd)
            self._seal()
            crashpoints.reach("gc-before-unlink")
            if damaged:  # keep the damaged file's bytes for inspection, never just delete them
                store_dir(self.quarantine_dir)
                osio.replace(pack.path, self.quarantine_dir / pack.name)
            else:
                osio.unlink(pack.path)
            with contextlib.suppress(FileNotFoundError):
                osio.unlink(packidx.path_of(pack.path))
            if self.durable:
                fsync_dir(self.packs_dir)
        finally:
            os.close(fd)
        self._packs.pop(pack.name, None)
        pack.close()
        self._cache.forget_pack(pack.name)
        return True

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        infos = await self._run(self.list_objects_sync)
        for info in infos:
            yield info

    def list_objects_sync(self) -> list[ObjectInfo]:
        with self._mutex:
            self._refresh_packs()
            out = []
            for oid, pack in self._index.items():
                rec_off, _, n = packfmt.unpack_loc(pack.entries[oid])
                out.append(ObjectInfo(oid, n, pack.records[rec_off].time_ns))
            for sub in sorted(os.scandir(self.objects_dir), key=lambda e: e.name):
                if not sub.is_dir() or len(sub.name) != 2:
                    continue
                for f in os.scandir(sub.path):
                    if f.name.startswith("."):
                        continue
                    try:
                        oid = bytes.fromhex(sub.name + f.name)
                        st = f.stat()
                    except (ValueError, FileNotFoundError):
                        continue
                    if len(oid) == 32 and oid not in self._index:
                        out.append(ObjectInfo(oid, st.st_size, st.st_mtime_ns))
            return out

    # -- refs ----------------------------------------------------------------------------------

    def _refs(self) -> RefJournal:
        assert self._journal is not None
        return self._journal

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._run(self.get_refs_sync, names)

    def get_refs_sync(self, names: Collection[str]) -> dict[str, bytes]:
        with self._mutex:
            j = self._refs()
            j.refresh()
            return {n: j.refs[n] for n in names if n in j.refs}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return await self._run(self.list_refs_sync, prefix)

    def list_refs_sync(self, prefix: str = "") -> dict[str, bytes]:
        with self._mutex:
            j = self._refs()
            j.refresh()
            return {n: v for n, v in j.refs.items() if n.startswith(prefix)}

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        await self._run(self.update_refs_sync, updates, message)

    def update_refs_sync(self, updates: Sequence[RefUpdate], message: str = "") -> None:
        with self._mutex:
            self._refs().update(updates, message)

    async def copy_ref(self, source: str, target: str, *, expected: Any = None, message: str = "") -> bytes:
        return await self._run(self.copy_ref_sync, source, target, expected, message)

    def copy_ref_sync(self, source: str, target: str, expected: Any = None, message: str = "") -> bytes:
        with self._mutex:
            return self._refs().copy(source, target, expected, message)

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        return await self._run(self.reflog_sync, name)

    def reflog_sync(self, name: str | None = None) -> list[ReflogEntry]:
        with self._mutex:
            j = self._refs()
            j.refresh()
            return j.reflog(name)

    async def commit(
        self,
        items: Sequence[tuple[bytes, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        stream: str = "",
        history: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        return await self._run(self.commit_sync, items, updates, message, stream, history)

    def commit_sync(
        self,
        items: Sequence[tuple[bytes, bytes]],
        updates: Sequence[RefUpdate],
        message: str = "",
        stream: str = "",
        history: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        """Objects durable first, then the refs: one hop, a shared gc lock held throughout."""
        assert self._gc_lock is not None
        # The gc lock first: a save waits for gc without holding the mutex gc's deletes need.
        # A task inside gc_shared holds it already: taking it again could queue behind a
        # waiting gc (the turnstile), which waits for that task: a deadlock until the timeout.
        held = contextlib.nullcontext(True) if self._shared_held.get() else self._gc_lock.hold(exclusive=False)
        with held, self._mutex:
            written = self.put_objects_sync(items, stream, history) if items or history else 0
            if updates:
                self._refs().update(updates, message)
            return written

    # -- store-wide ------------------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        return await self._run(self.stats_sync)

    def stats_sync(self) -> dict[str, int]:
        with self._mutex:
            self._refresh_packs()
            files = apparent = allocated = 0
            for dirpath, _, filenames in os.walk(self.root):
                for f in filenames:
                    try:
                        st = os.stat(os.path.join(dirpath, f))
                    except FileNotFoundError:
                        continue
                    files += 1
                    apparent += st.st_size
                    allocated += st.st_blocks * 512
            return {
                "objects": len(self._index) + sum(1 for _ in self._loose_ids()),
                "packs": len(self._packs),
                "files": files,
                "bytes_apparent": apparent,
                "bytes_allocated": allocated,
            }

    def _loose_ids(self) -> list[bytes]:
        out: list[bytes] = []
        for sub in os.scandir(self.objects_dir):
            if sub.is_dir() and len(sub.name) == 2:
                out.extend(bytes.fromhex(sub.name + f.name) for f in os.scandir(sub.path) if not f.name.startswith("."))
        return out

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        if not self._opened or self._gc_lock is None:
            raise StoreError(f"store {self.location} is not open")
        async with self._gc_lock.hold_async(exclusive=True):
            yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        # A lock object of its own (its own descriptor): shared flocks of this process's
        # saves and of other holders do not wait for each other.
        if not self._opened:
            raise StoreError(f"store {self.location} is not open")
        lock = self._new_gc_lock()
        try:
            async with lock.hold_async(exclusive=False):
                token = self._shared_held.set(True)  # this task's commits need not take it again
                try:
                    yield
                finally:
                    self._shared_held.reset(token)
        finally:
            lock.close()

    def _new_gc_lock(self) -> FileLock:
        locks = self.root / "locks"
        return FileLock(locks / "gc.lock", self._lock_timeout, turnstile=locks / "gc.turnstile")

    async def check_storage(self) -> list[str]:
        return await self._run(self.check_storage_sync)

    def check_storage_sync(self) -> list[str]:
        """Damaged spans of packs, records whose chain a damaged record broke, and damage in the
        ref journal (read whole: an open that started from refs.snapshot skipped its covered bytes)."""
        with self._mutex:
            self._refresh_packs()
            out = []
            try:
                self._refs().verify()
            except CorruptFileError as exc:
                out.append(f"ref journal {exc.path}: {exc.reason}")
            for known in sorted(self._packs.values(), key=lambda p: p.name):
                pack = known
                if known.indexed:  # an index may have filled it, and would hide later damage: scan afresh
                    pack = packfmt.Pack(known.path, end=known.end)
                    try:
                        packfmt.scan_pack(pack)
                    except FileNotFoundError:
                        continue
                    finally:
                        pack.close()
                for start, end in pack.damaged:
                    out.append(f"pack {pack.path}: damaged record(s) in bytes {start}-{end}, skipped")
                broken = [r for r in pack.records.values() if r.chain < 0]
                if broken:
                    lost = sum(1 for loc in pack.entries.values() if pack.records[packfmt.unpack_loc(loc)[0]].chain < 0)
                    out.append(
                        f"pack {pack.path}: {len(broken)} record(s) follow a damaged record; "
                        f"their {lost} object(s) cannot be read"
                    )
            return out

    async def repair_refs(self) -> RefRepairReport:
        try:
            return await asyncio.to_thread(self.repair_refs_sync)
        except CastateError:
            raise
        except OSError as exc:
            raise self._io_error(exc) from exc

    def repair_refs_sync(self) -> RefRepairReport:
        """Rebuild a damaged ref journal from its intact records; the store need not open."""
        with self._mutex:
            if not (self.root / CONFIG).exists():
                raise StoreNotFoundError(f"no castate store at {self.root}")
            self._init_or_check()
            journal = self._journal or RefJournal(
                self.root / "refs.journal",
                FileLock(self.root / "locks" / "refs.lock", self._lock_timeout),
                self.durable,
            )
            try:
                return journal.repair(self.quarantine_dir)
            finally:
                if journal is not self._journal:
                    journal.lock.close()

    async def expire_reflog(self, before_ns: int) -> int:
        return await self._run(self.expire_reflog_sync, before_ns)

    def expire_reflog_sync(self, before_ns: int) -> int:
        with self._mutex:
            return self._refs().compact(before_ns)

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        return await self._run(self.quarantine_objects_sync, ids)

    def quarantine_objects_sync(self, ids: Collection[bytes]) -> int:
        """Save each object's stored bytes (as they are, damaged or not) under quarantine/, then delete it."""
        wanted = set(ids)
        with self._mutex:
            self._refresh_packs()
            store_dir(self.quarantine_dir)
            saved: set[bytes] = set()
            for oid in wanted:
                data: bytes | None = None
                loose = self._loose_path(oid)
                if loose.exists():
                    try:
                        data = read_regular(loose, MAX_FRAME)
                    except CorruptFileError as exc:
                        data = f"unreadable: {exc}".encode()
                elif oid in self._index:
                    pack = self._index[oid]
                    rec_off, off, n = packfmt.unpack_loc(pack.entries[oid])
                    try:
                        data = bytes(self._cache.record_bytes(pack, pack.records[rec_off])[off : off + n])
                    except CorruptFileError as exc:
                        data = f"unreadable: {exc}".encode()
                if data is not None:
                    atomic_write(self.quarantine_dir / oid.hex(), data, durable=self.durable)
                    saved.add(oid)
            if saved:
                self.delete_objects_sync(saved)
            return len(saved)
