"""The local-directory store: castate's embedded default, a blob backend on plain files.

Layout of a store directory (docs/format.md §3 has the bytes)::

    castate.json        format version (2) and store id
    volumes/*.vol       blob records, appended under the journal lock (volumes.py)
    refs.journal        every ref change and every blob's place, in one append-only file
    refs.snapshot       a checked cache of the replayed journal (an open replays only the tail)
    locks/              refs.lock (journal writers), gc.lock (saves against gc)
    quarantine/         damaged files set aside by repairs

The pack format lives in the repository (castate.repository.packs) as for every other
backend; this module knows bytes, names and atomic ref moves only. A save is one
``commit``: its blobs are appended to a volume and made durable, then one journal record
moves the refs and records the blobs' places. Every public method makes one hop to a
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from castate.backends.base import (
    Durability,
    ReflogEntry,
    RefRepairReport,
    RefUpdate,
    _Any,
    plan_ref_updates,
)
from castate.backends.blob import BlobBackend, BlobInfo, check_blob_name
from castate.backends.local.files import atomic_write, exposed, make_dirs, store_dir
from castate.backends.local.journal import Change, RefJournal
from castate.backends.local.legacy import FormatOneObjects, has_format_one_files
from castate.backends.local.locks import FileLock
from castate.backends.local.volumes import HEADER, MAX_BLOB, Place, Volumes, record_size
from castate.errors import (
    CastateError,
    ConflictError,
    CorruptFileError,
    NotFoundError,
    StoreError,
    StoreIOError,
    StoreNotFoundError,
    StoreWarning,
    UnsupportedFormatError,
)

STORE_VERSION = 2
CONFIG = "castate.json"
VOLUME_MAX = 16 << 20  # a writer starts a new volume past this size (it also bounds one clean-up's copy)
PLACE = "\x00"  # journal names starting with it hold blob places; ref names never do
RECLAIM_BELOW = 0.5  # gc rewrites a volume whose live records fill less than this share of it
# Deletes (the pack store's segment merges, gc) rewrite a volume taking at least CLEAN_MIN
# bytes of disk once its live records fill less than CLEAN_BELOW of them: a store that is never
# gc'ed stays within about 1/CLEAN_BELOW of its live bytes, for about CLEAN_BELOW/(1 -
# CLEAN_BELOW) bytes copied per byte freed (punched holes free large dead records at once).
CLEAN_BELOW = 0.75
CLEAN_MIN = 1 << 20
HEADER_SIZE = len(HEADER)
JOURNAL_MIN = 256 << 10  # a smaller journal keeps its place history through a clean-up
T = TypeVar("T")


class VolumeUsage:
    """Bytes of live blob records per volume, kept current as the journal replays."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}

    def reload(self, entries: dict[str, bytes]) -> None:
        self.live = {}
        for name, value in entries.items():
            if name.startswith(PLACE):
                self._add(name, Place.unpack(value), 1)

    def change(self, name: str, old: bytes | None, new: bytes | None) -> None:
        if name.startswith(PLACE):
            if old is not None:
                self._add(name, Place.unpack(old), -1)
            if new is not None:
                self._add(name, Place.unpack(new), 1)

    def _add(self, name: str, place: Place, sign: int) -> None:
        live = self.live.get(place.volume, 0) + sign * record_size(name[1:], place)
        if live:
            self.live[place.volume] = live
        else:
            self.live.pop(place.volume, None)


class LocalBackend(BlobBackend):
    """A castate store in a local directory (created on first open when missing or empty)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        create: bool | None = True,
        lock_timeout: float = 60.0,
        volume_size: int = VOLUME_MAX,
    ) -> None:
        if durability not in ("durable", "relaxed"):
            raise ValueError("durability must be 'durable' or 'relaxed'")
        self.root = Path(path)
        self.location = str(self.root)
        self.durable = durability == "durable"
        self.create = create
        self._lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._volumes = Volumes(self.root / "volumes", self.durable, volume_size)
        self._journal: RefJournal | None = None
        self._usage = VolumeUsage()
        self._gc_lock: FileLock | None = None
        # True in a task (and the worker threads it starts) that holds gc_shared.
        self._shared_held: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"castate-local-gc-shared-{id(self)}", default=False
        )
        self._legacy: FormatOneObjects | None = None  # a format-1 store's objects, until `castate upgrade` moves them
        self._opened = False
        self.store_id = ""

    # -- lifecycle --------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._opened:
            raise StoreError(f"store {self.location} is not open")
        return await self._hop(fn, *args)

    async def _hop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` on a worker thread, its OSError as castate's StoreIOError."""
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
            await self._hop(self._open_sync)

    def _open_sync(self) -> None:
        with self._mutex:
            if self._opened:
                return
            version = self._init_or_check()
            self._journal = self._new_journal()
            self._gc_lock = self._new_gc_lock()
            self._journal.refresh()
            if version == 1 and not has_format_one_files(self.root):
                # An upgrade that moved every object and died before it marked the store (or a
                # format-1 store that never held one): finish it.
                self._mark_format_two()
            elif version == 1:
                self._legacy = FormatOneObjects(self.root)
                self._legacy.scan()
            self._opened = True

    def _new_journal(self) -> RefJournal:
        lock = FileLock(self.root / "locks" / "refs.lock", self._lock_timeout)
        journal = RefJournal(self.root / "refs.journal", lock, self.durable)
        journal.on_change = self._usage.change
        journal.on_reload = self._usage.reload
        return journal

    def _new_gc_lock(self) -> FileLock:
        locks = self.root / "locks"
        return FileLock(locks / "gc.lock", self._lock_timeout, turnstile=locks / "gc.turnstile")

    def _init_or_check(self) -> int:
        """Create the store if allowed and missing; check its config and files; its format version."""
        root = self.root
        config = root / CONFIG
        if not config.exists():
            self._init(root, config)
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
        for d in (root / "volumes", root / "locks"):
            store_dir(d)
        dirs = [root, root / "volumes", root / "locks", root / "quarantine", config]
        if version == 1:
            dirs += [root / "packs", root / "objects"]
        if (root / "quarantine").exists() or (root / "quarantine").is_symlink():
            store_dir(root / "quarantine")
        loose = exposed(dirs)
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
                "the ref journal (every ref, the reflog and where each blob lies) is missing: restore it from a backup",
            )
        return int(version)

    def _init(self, root: Path, config: Path) -> None:
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is not a directory")
        if (root / "refs.journal").exists():
            raise CorruptFileError(
                str(config),
                "the store config is missing, but the store's refs and blobs are here: restore it "
                "from a backup, or write it again as docs/format.md (section 3) shows",
            )
        if root.exists() and any(p.name not in ("volumes", "locks") for p in root.iterdir()):
            raise StoreError(
                f"{root} is not a castate store: it holds files but no {CONFIG} "
                "(pick an empty or new directory, or import the old data with `castate import`)"
            )
        if self.create is not True:
            later = " (a save creates it)" if self.create is None else ""
            raise StoreNotFoundError(f"no castate store at {root}{later}")
        make_dirs(root)
        for d in (root / "volumes", root / "locks"):
            store_dir(d)
        body = {"castate": "store", "version": STORE_VERSION, "id": os.urandom(16).hex(), "created_ns": time.time_ns()}
        atomic_write(config, orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n", exclusive=True)
        self._new_journal().create()

    async def close(self) -> None:
        with self._mutex:
            self._volumes.close()
            for lock in (self._journal.lock if self._journal else None, self._gc_lock):
                if lock is not None:
                    lock.close()
            if self._legacy is not None:
                self._legacy.close()
                self._legacy = None
            self._opened = False

    # -- blobs ------------------------------------------------------------------------------

    def _j(self) -> RefJournal:
        assert self._journal is not None
        return self._journal

    def _places(self, names: Collection[str]) -> dict[str, Place]:
        """The places of the names that exist, after replaying what other writers appended (a
        stat and a header read when nothing changed)."""
        self._j().refresh()
        refs = self._j().refs
        self._volumes.keep_open(self._usage.live.keys())  # a volume nothing lives in may be gone soon
        return {n: Place.unpack(refs[PLACE + n]) for n in names if PLACE + n in refs}

    def _read(self, reader: Callable[[dict[str, Place]], T], names: Collection[str]) -> T:
        """``reader`` over the names' places, checked against the journal afterwards.

        Another process may delete a blob (its record's magic overwritten, its blocks punched
        out) or move it (a clean-up) after this one looked its place up: it records that in
        the journal before it touches the volume. So a read whose places still stand in the
        journal replayed after it read the bytes it should; otherwise (or when a volume
        vanished, or a record no longer frames its blob) it reads again at the new places."""
        with self._mutex:
            places = self._places(names)
            for _ in range(8):
                try:
                    out = reader(places)
                except FileNotFoundError:
                    for place in places.values():
                        self._volumes.forget(place.volume)
                    places = self._places(names)
                    continue
                except CorruptFileError:
                    before = places
                    places = self._places(names)
                    if places == before:
                        raise  # the journal still says so: damage
                    continue
                before = places
                places = self._places(names)
                if places == before:
                    return out
            return reader(places)

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._run(self._get_blobs, list(names))

    def _get_blobs(self, names: list[str]) -> dict[str, bytes]:
        def read(places: dict[str, Place]) -> dict[str, bytes]:
            order = sorted(places.items(), key=lambda kv: (kv[1].volume, kv[1].offset))
            return {name: self._volumes.read(name, place) for name, place in order}

        return self._read(read, names)

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        return await self._run(self._get_ranges, list(ranges))

    def _get_ranges(self, ranges: list[tuple[str, int, int]]) -> list[bytes | None]:
        for _, offset, length in ranges:
            if offset < 0 or length < 0:
                raise ValueError("offsets and lengths are not negative")

        def read(places: dict[str, Place]) -> list[bytes | None]:
            out: list[bytes | None] = []
            for name, offset, length in ranges:
                place = places.get(name)
                out.append(None if place is None else self._volumes.read_range(name, place, offset, length))
            return out

        return self._read(read, {name for name, _, _ in ranges})

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        return await self._run(self._list_blobs, prefix)

    def _list_blobs(self, prefix: str) -> list[BlobInfo]:
        with self._mutex:
            j = self._j()
            j.refresh()
            key = PLACE + prefix
            out = []
            for name, raw in j.refs.items():
                if name.startswith(key):
                    place = Place.unpack(raw)
                    out.append(BlobInfo(name[1:], place.size, place.time_ns))
            out.sort(key=lambda info: info.name)
            return out

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        # Not under gc's lock (as in every backend): gc itself writes its rewritten packs here.
        _check_blobs(items)
        return await self._run(self._write, list(items), [], "", {})

    async def delete_blobs(self, names: Collection[str]) -> int:
        return await self._run(self._delete_blobs, list(names))

    def _delete_blobs(self, names: list[str]) -> int:
        def plan(refs: dict[str, bytes]) -> tuple[list[Change], list[tuple[str, Place]]]:
            gone = sorted({PLACE + n for n in names if PLACE + n in refs})
            return [(key, refs[key], None) for key in gone], [(key[1:], Place.unpack(refs[key])) for key in gone]

        with self._mutex:
            gone = self._j().apply(plan, "delete blobs")
            # After the record is durable: a crash before leaves dead bytes, never a hole in a live blob.
            for name, place in gone:
                self._volumes.kill(place)
                self._volumes.punch(name, place)
            self._clean(CLEAN_BELOW, CLEAN_MIN)
            return len(gone)

    def _clean(self, below: float, min_size: int) -> None:
        """Move the live blobs of every volume of at least ``min_size`` bytes whose live records
        fill less than ``below`` of it into new volumes, then unlink the emptied volumes;
        volumes with nothing live (or shorter than their header: a creator died) are unlinked
        without a copy. Volumes go a batch at a time, each batch copying at most about one
        volume's size in one journal record, so memory and the journal lock's hold stay bounded.

        Decided under the journal lock: only the newest volume takes appends, so a volume found
        empty there, and not the newest, stays empty. Writers go on between batches (their
        appends go to the new volume); a reader whose volume vanished replays the journal and
        reads again."""
        usage = self._usage.live
        candidates = [
            n
            for n in self._volumes.numbers()
            if self._volumes.size(n) < HEADER_SIZE
            or (
                usage.get(n, 0) < below * (size := self._volumes.allocated(n))
                and (size >= min_size or not usage.get(n))
            )
        ]
        budget = self._volumes.max_size
        moved_any = False
        while candidates:
            batch: list[int] = []
            total = 0
            while candidates and (not batch or total + usage.get(candidates[0], 0) <= budget):
                total += usage.get(candidates[0], 0)
                batch.append(candidates.pop(0))
            emptied, moved = self._j().apply(self._clean_plan(set(batch)), "move live blobs out of sparse volumes")
            self._volumes.remove(emptied)
            moved_any = moved_any or moved
        # The journal's record of where blobs were is history no one reads (the reflog shows
        # refs only), and a clean-up just rewrote much of it: rewrite the journal without it.
        if moved_any and os.stat(self._j().path).st_size >= JOURNAL_MIN:
            self._j().drop_history(PLACE)

    def _clean_plan(
        self, chosen_volumes: set[int]
    ) -> Callable[[dict[str, bytes]], tuple[list[Change], tuple[list[int], bool]]]:
        def plan(refs: dict[str, bytes]) -> tuple[list[Change], tuple[list[int], bool]]:
            numbers = self._volumes.numbers()
            newest = numbers[-1] if numbers else 0
            chosen = {n for n in chosen_volumes if n in numbers}
            moving = sorted(
                ((name, Place.unpack(raw)) for name, raw in refs.items() if name.startswith(PLACE)),
                key=lambda item: (item[1].volume, item[1].offset),
            )
            moving = [(name, place) for name, place in moving if place.volume in chosen]
            data: list[tuple[str, bytes]] = []
            kept: set[int] = set()  # volumes holding a damaged blob stay, for fsck to name it
            ok: list[tuple[str, Place]] = []
            for name, place in moving:
                try:
                    data.append((name[1:], self._volumes.read(name[1:], place, verify=True)))
                    ok.append((name, place))
                except CorruptFileError:
                    kept.add(place.volume)
            emptied = chosen - kept
            if not data:
                return [], (sorted(emptied - {newest}), False)  # the newest may take the next append
            new = self._volumes.append(data, time.time_ns(), fresh=True)
            changes: list[Change] = [
                (name, old.pack(), Place(n.volume, n.offset, n.size, old.time_ns).pack())
                for (name, old), n in zip(ok, new, strict=True)
            ]
            return changes, (sorted(emptied), True)

        return plan

    # -- refs -------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._run(self._get_refs, list(names))

    def _get_refs(self, names: list[str]) -> dict[str, bytes]:
        with self._mutex:
            j = self._j()
            j.refresh()
            return {n: j.refs[n] for n in names if n in j.refs and not n.startswith(PLACE)}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return await self._run(self._list_refs, prefix)

    def _list_refs(self, prefix: str) -> dict[str, bytes]:
        with self._mutex:
            j = self._j()
            j.refresh()
            return {n: v for n, v in j.refs.items() if n.startswith(prefix) and not n.startswith(PLACE)}

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        return await self._run(self._copy_ref, source, target, expected, message)

    def _copy_ref(self, source: str, target: str, expected: bytes | _Any | None, message: str) -> bytes:
        def plan(refs: dict[str, bytes]) -> tuple[list[Change], bytes]:
            value = refs.get(source) if not source.startswith(PLACE) else None
            if value is None:
                raise NotFoundError(f"no ref {source}")
            return plan_ref_updates(refs, [RefUpdate(target, value, expected)]), value

        with self._mutex:
            return self._j().apply(plan, message)

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        return await self._run(self._reflog, name)

    def _reflog(self, name: str | None) -> list[ReflogEntry]:
        with self._mutex:
            j = self._j()
            j.refresh()
            return [e for e in j.reflog(name) if not e.name.startswith(PLACE)]

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        _check_blobs(blobs)
        return await self._run(self._commit, list(blobs), list(updates), message, dict(checks or {}))

    def _commit(
        self,
        blobs: list[tuple[str, bytes]],
        updates: list[RefUpdate],
        message: str,
        checks: dict[str, bytes | None],
    ) -> int:
        """Blobs durable in a volume first, then one journal record with the ref changes and the
        blobs' places: a crash between the two leaves unreferenced bytes for gc, never a ref to a
        blob that is not there."""
        assert self._gc_lock is not None
        # A commit of ref moves alone does not wait for gc: it adds nothing gc could delete, and
        # gc moves a ref itself while it holds the lock. A task inside gc_shared holds it
        # already: taking it again could queue behind a waiting gc (the turnstile), which waits
        # for that task: a deadlock until the timeout.
        if (not blobs and not checks) or self._shared_held.get():
            return self._write(blobs, updates, message, checks)
        with self._gc_lock.hold(exclusive=False):
            return self._write(blobs, updates, message, checks)

    def _write(
        self,
        blobs: list[tuple[str, bytes]],
        updates: list[RefUpdate],
        message: str,
        checks: dict[str, bytes | None],
    ) -> int:
        def plan(refs: dict[str, bytes]) -> tuple[list[Change], int]:
            for name, want in checks.items():
                if refs.get(name) != want:
                    raise ConflictError(f"ref {name} changed: another writer moved it", name)
            changes = plan_ref_updates(refs, updates)
            new: dict[str, bytes] = {}
            for name, data in blobs:
                if PLACE + name not in refs and name not in new:
                    new[name] = data
            if new:
                places = self._volumes.append(list(new.items()), time.time_ns())
                changes += [(PLACE + name, None, place.pack()) for name, place in zip(new, places, strict=True)]
            return changes, len(new)

        with self._mutex:
            return self._j().apply(plan, message)

    # -- maintenance ------------------------------------------------------------------------

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

    async def reclaim(self) -> None:
        await self._run(self._reclaim)

    def _reclaim(self) -> None:
        """gc's pass (after deleting, under its lock): every volume less than half live is rewritten."""
        with self._mutex:
            self._j().refresh()
            self._clean(RECLAIM_BELOW, 0)

    async def expire_reflog(self, before_ns: int) -> int:
        return await self._run(self._expire_reflog, before_ns)

    def _expire_reflog(self, before_ns: int) -> int:
        with self._mutex:
            before = len(self._reflog(None))
            self._j().compact(before_ns)
            return before - len(self._reflog(None))

    async def stats(self) -> dict[str, int]:
        return await self._run(self._stats)

    def _stats(self) -> dict[str, int]:
        with self._mutex:
            blobs = self._list_blobs("")
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
                "blobs": len(blobs),
                "blob_bytes": sum(b.size for b in blobs),
                "volumes": len(self._volumes.numbers()),
                "files": files,
                "bytes_apparent": apparent,
                "bytes_allocated": allocated,
            }

    async def check_storage(self) -> list[str]:
        return await self._run(self._check_storage)

    def _check_storage(self) -> list[str]:
        """Damage in the ref journal (read whole) and in every live blob's record (blake3 checked)."""
        with self._mutex:
            out = []
            try:
                self._j().verify()
            except CorruptFileError as exc:
                out.append(f"ref journal {exc.path}: {exc.reason}")
            self._j().refresh()
            for name, raw in sorted(self._j().refs.items()):
                if name.startswith(PLACE):
                    problem = self._check_blob(name, raw)
                    if problem is not None:
                        out.append(problem)
            return out

    def _check_blob(self, name: str, raw: bytes) -> str | None:
        """What is wrong with a live blob's record, or None; a blob another process moved or
        deleted meanwhile (the journal says so after a replay) is looked at again, not reported."""
        for _ in range(4):
            place = Place.unpack(raw)
            try:
                self._volumes.read(name[1:], place, verify=True)
                return None
            except CorruptFileError as exc:
                problem = f"volume {exc.path}: {exc.reason}"
            except FileNotFoundError:
                self._volumes.forget(place.volume)
                problem = f"blob {name[1:]}: its volume {place.volume} is missing"
            self._j().refresh()
            now = self._j().refs.get(name)
            if now is None:
                return None  # deleted meanwhile
            if now == raw:
                return problem
            raw = now
        return problem

    async def repair_refs(self) -> RefRepairReport:
        return await self._hop(self._repair_refs)

    def _repair_refs(self) -> RefRepairReport:
        """Rebuild a damaged ref journal from its intact records; the store need not open."""
        with self._mutex:
            if not (self.root / CONFIG).exists():
                raise StoreNotFoundError(f"no castate store at {self.root}")
            journal = self._journal or self._new_journal()
            try:
                report = journal.repair(self.root / "quarantine")
                if report.damaged:
                    report.blobs_found = self._place_lost_blobs(journal)
                report.inferred = {k: v for k, v in report.inferred.items() if not k.startswith(PLACE)}
                report.refs = sum(1 for name in journal.refs if not name.startswith(PLACE))
                return report
            finally:
                if journal is not self._journal:
                    journal.lock.close()

    def _place_lost_blobs(self, journal: RefJournal) -> int:
        """Place again the intact volume records that no journal record names: the blobs of
        records the repair could not keep (a save's pack and index segment, which would
        otherwise take every later save of that session with them). A blob placed this way
        that was garbage (a failed commit's, or deleted before a reflog expiry dropped its
        record) is garbage again, for gc."""
        named = {name for rec in journal.records for name, _, _ in rec.changes} | set(journal.refs)
        found: dict[str, Place] = {}
        for number in self._volumes.numbers():
            try:
                for name, place in self._volumes.salvage(number):
                    if PLACE + name not in named:
                        found[name] = place  # a later copy wins
            except (CorruptFileError, OSError):
                continue

        def plan(refs: dict[str, bytes]) -> tuple[list[Change], int]:
            adds: list[Change] = [
                (PLACE + n, None, p.pack()) for n, p in sorted(found.items()) if PLACE + n not in refs
            ]
            return adds, len(adds)

        return journal.apply(plan, "repair: blobs of lost records, found in volumes")

    # -- format-1 stores ----------------------------------------------------------------------

    async def legacy_objects(self) -> int:
        return 0 if self._legacy is None else len(self._legacy.ids())

    async def iter_legacy_frames(self, batch: int = 1000) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        legacy = self._legacy
        if legacy is None:
            return
        ids = legacy.ids()
        for start in range(0, len(ids), batch):
            part = ids[start : start + batch]
            frames = await self._run(legacy.frames, part)
            yield [(oid, frames[oid]) for oid in part]

    async def drop_legacy(self) -> None:
        if self._legacy is not None:
            await self._run(self._drop_legacy)

    def _drop_legacy(self) -> None:
        """Remove the format-1 packs and loose objects (every one is in a durable pack now), then
        mark the store format 2."""
        with self._mutex:
            assert self._legacy is not None
            self._legacy.drop()
            self._legacy = None
            self._mark_format_two()

    def _mark_format_two(self) -> None:
        config = self.root / CONFIG
        meta = orjson.loads(config.read_bytes())
        meta["version"] = STORE_VERSION
        atomic_write(config, orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n", durable=True)


def _check_blobs(items: Sequence[tuple[str, bytes]]) -> None:
    for name, data in items:
        check_blob_name(name)
        if len(data) > MAX_BLOB:
            raise ValueError(f"blob {name} is {len(data)} bytes; the local store takes at most {MAX_BLOB}")


__all__ = ["LocalBackend"]
