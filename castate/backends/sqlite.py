"""The SQLite blob backend: a whole castate store in one database file, for one machine.

Tables of a store created by this code (schema version 2, in ``PRAGMA user_version``)::

    castate_meta (key, value)                      'castate' = 'store', 'id' = store id
    blobs        (name, size, time_ns, data)       one row per blob (packs, indexes, quarantine)
    refs         (name, target)                    current ref targets
    reflog       (seq, name, old, new, time_ns, message)

A format-1 file (schema version 1, one row per object frame in ``objects``, plus a
``quarantine`` table) is migrated on open by adding ``blobs``; its ``objects`` rows stay
until ``castate upgrade`` has copied them into packs and called ``drop_legacy``.

The database runs in WAL mode, so readers never block the writer. Every public method is
one hop to a worker thread running one transaction on the backend's connection (the
stdlib ``sqlite3``; one hop per call is all the batching the contract needs, so aiosqlite's
per-statement hops would only add cost). Several processes may share the file: writes
serialize on SQLite's write lock (``BEGIN IMMEDIATE``). Commits that store blobs and gc
coordinate through a flock on ``<file>-gclock`` beside the database, as the local backend does.

New files use ``auto_vacuum = INCREMENTAL``, so ``reclaim`` can hand the pages of deleted
blobs back to the file system without rewriting the database, and 1 KiB pages: most packs
are a save's few kilobytes, stored mostly on a table leaf page (the rest on overflow pages),
and with 4 KiB pages those leaves stayed a quarter empty (0.94 MB unused in a 4.5 MB store
of 1,000 saves; 0.17 MB with 1 KiB pages, docs/performance.md). Files made with other page
sizes keep theirs (a WAL file's page size is fixed once written).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from castate.backends.base import Durability, ReflogEntry, RefUpdate, _Any, plan_ref_updates
from castate.backends.blob import BlobBackend, BlobInfo, check_blob_name
from castate.backends.local.locks import FileLock
from castate.errors import (
    ConflictError,
    CorruptFileError,
    NotFoundError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)

SCHEMA_VERSION = 2
BATCH = 500  # names per IN (...) list, well under SQLite's bound-parameter limit
PAGE_SIZE = 1024  # of new files: see the module docstring

# A rowid table, not WITHOUT ROWID: blobs are packs of up to several MB, and SQLite keeps
# large values best in rowid tables (a WITHOUT ROWID b-tree is tuned for rows well under a
# page), and only rowid tables allow incremental blob I/O, which get_ranges uses to read a
# slice without loading the whole pack. ``data`` comes last: the columns after a large value
# live at the end of its overflow chain, so list_blobs reads size and time_ns from the first
# page of a row instead of walking megabytes of overflow pages.
BLOBS_TABLE = """
    CREATE TABLE blobs (
        name TEXT PRIMARY KEY, size INTEGER NOT NULL, time_ns INTEGER NOT NULL, data BLOB NOT NULL)
"""

# The whole schema of a new store: no objects or quarantine tables (a quarantine is blobs
# named quarantine/..., made by the pack store).
SCHEMA = f"""
    CREATE TABLE castate_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    {BLOBS_TABLE};
    CREATE TABLE refs (name TEXT PRIMARY KEY, target BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE reflog (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, old BLOB, new BLOB,
        time_ns INTEGER NOT NULL, message TEXT NOT NULL);
    CREATE INDEX reflog_by_name ON reflog (name, seq)
"""

# Upgrades of an existing store, by the version each one produces. Version 1 was format 1:
# castate_meta, objects, refs, reflog, quarantine.
MIGRATIONS: dict[int, str] = {
    2: BLOBS_TABLE,
}

T = TypeVar("T")


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), BATCH):
        yield items[i : i + BATCH]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


class SQLiteBackend(BlobBackend):
    """A castate store in one SQLite file.

    ``create``: True creates the store on open when the file is missing or empty; False
    refuses (StoreError); None refuses too, until a write opens it (``Repository`` sets
    ``create`` to True for a save: what ``castate.open`` does for URLs). An existing file is
    checked on a read-only connection first, so another application's database is refused
    unchanged.

    ``durability="durable"`` (default) runs with ``synchronous=FULL``: a save is on disk
    when it returns. ``"relaxed"`` uses ``synchronous=NORMAL``: a power loss may drop the
    last saves (never half of one); a process crash loses nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        create: bool | None = True,
        lock_timeout: float = 60.0,
    ) -> None:
        if durability not in ("durable", "relaxed"):
            raise ValueError("durability must be 'durable' or 'relaxed'")
        self.path = Path(path)
        self.location = f"sqlite:///{self.path}"
        self.durable = durability == "durable"
        self.create = create
        self.lock_timeout = lock_timeout
        self.store_id = ""
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.RLock()
        self._gc_lock = self._new_gc_lock()
        # True in a task (and the worker threads it starts) that holds gc_shared.
        self._shared_held: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"castate-sqlite-gc-shared-{id(self)}", default=False
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None:
            await asyncio.to_thread(self._call, self._open_sync)

    def _open_sync(self) -> None:
        if self._conn is not None:
            return
        exists = self.path.exists()
        if exists:
            # Look before changing anything, on a read-only connection: a foreign database or a
            # newer store stays exactly as it was (no WAL switch, no journal, no schema).
            self._check_read_only()
        elif self.create is not True:
            raise StoreNotFoundError(
                f"no castate store at {self.path}" + (" (a save creates it)" if self.create is None else "")
            )
        else:
            if not self.path.parent.is_dir():
                raise StoreError(f"cannot create {self.path}: {self.path.parent} is not a directory")
            # Private to the owner (state often holds secrets); SQLite gives its -wal and -shm
            # files the database file's permissions.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                if self.create is not True:  # an empty file is no store yet
                    raise StoreNotFoundError(
                        f"no castate store at {self.path} (an empty file)"
                        + (" (a save creates it)" if self.create is None else "")
                    )
                # An empty file becomes a new store. The page size and auto_vacuum can only be
                # chosen before the file's first page is written, and switching to WAL writes it,
                # so they come first (the page size before auto_vacuum, or SQLite ignores it).
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            # One read transaction, so a store another process creates meanwhile is seen whole.
            conn.execute("BEGIN")
            try:
                self._check_version(conn)
            finally:
                conn.execute("COMMIT")
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._migrate(conn)
            self.store_id = self._meta(conn).get("id", "")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _check_read_only(self) -> None:
        """Refuse an existing file that is not a (supported) castate store, reading it only."""
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.lock_timeout, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                return  # empty: a store to be (the caller decides whether to create it)
            conn.execute("BEGIN")
            try:
                self._check_version(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent; a no-op once done), retrying while another opener holds it.

        Several processes opening a new file at once race to switch it, and SQLite answers the
        losers "database is locked" at once instead of waiting, so this waits here (up to
        ``lock_timeout``) as SQLite waits for its other locks."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _check_version(self, conn: sqlite3.Connection) -> int:
        """The file's schema version, after refusing files that are not (supported) castate stores."""
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version and not _has_table(conn, "castate_meta"):  # another application's versioned database
            raise StoreError(f"{self.path} is an SQLite database but not a castate store")
        if version > SCHEMA_VERSION:
            raise UnsupportedFormatError(
                f"store {self.path} has schema version {version}; this castate reads up to {SCHEMA_VERSION} "
                "(upgrade castate)"
            )
        if version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} is an SQLite database but not a castate store")
        else:
            self._meta(conn)
        return version

    def _meta(self, conn: sqlite3.Connection) -> dict[str, str]:
        """castate_meta's rows, or StoreError when the file is not a castate store."""
        meta = dict(conn.execute("SELECT key, value FROM castate_meta")) if _has_table(conn, "castate_meta") else {}
        if meta.get("castate") != "store":
            raise StoreError(f"{self.path} is not a castate store (castate_meta says {meta.get('castate')!r})")
        return meta

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create a new store's schema, or bring an older one up to SCHEMA_VERSION, in one transaction."""
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._check_version(conn)  # another process may have created or migrated it meanwhile
            if version == 0:
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO castate_meta VALUES (?, ?)",
                    [("castate", "store"), ("id", os.urandom(16).hex()), ("created_ns", str(time.time_ns()))],
                )
            else:
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _statements(MIGRATIONS[v]):
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._gc_lock.close()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the connection under the mutex, turning sqlite3 errors into castate's."""
        with self._mutex:
            try:
                return fn(*args)
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.DatabaseError) -> StoreError:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return StoreError(f"timed out after {self.lock_timeout:.0f}s waiting for the write lock of {self.path}")
        if "malformed" in text or "not a database" in text:
            return CorruptFileError(str(self.path), text)
        return StoreError(f"SQLite store {self.path}: {text}")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise StoreError(f"store {self.location} is not open")
        return await asyncio.to_thread(self._call, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.location} is not open")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken up front (IMMEDIATE), so checks and changes see one state."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: several statements see one snapshot (WAL readers never wait)."""
        conn = self._db()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- blobs ----------------------------------------------------------------------------------

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._run(self._get_blobs, list(set(names)))

    def _get_blobs(self, names: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with self._read() as conn:
            for part in _chunks(names):
                out.update(conn.execute(f"SELECT name, data FROM blobs WHERE name IN ({_marks(len(part))})", part))
        return out

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        ranges = list(ranges)
        for _, offset, length in ranges:
            if offset < 0 or length < 0:
                raise ValueError(f"bad blob range: offset {offset}, length {length}")
        return await self._run(self._get_ranges, ranges)

    def _get_ranges(self, ranges: list[tuple[str, int, int]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        with self._read() as conn:
            rows: dict[str, tuple[int, int]] = {}
            for part in _chunks(list({name for name, _, _ in ranges})):
                marks = _marks(len(part))
                for name, rowid, size in conn.execute(
                    f"SELECT name, rowid, size FROM blobs WHERE name IN ({marks})", part
                ):
                    rows[name] = (rowid, size)
            for name, offset, length in ranges:
                row = rows.get(name)
                if row is None:
                    out.append(None)
                    continue
                rowid, size = row
                if offset >= size or length == 0:
                    out.append(b"")
                    continue
                # Incremental blob I/O reads only the pages of the slice, not the whole pack.
                with conn.blobopen("blobs", "data", rowid, readonly=True) as blob:
                    blob.seek(offset)
                    out.append(blob.read(length))
        return out

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        return await self._run(self._list_blobs, prefix)

    def _list_blobs(self, prefix: str) -> list[BlobInfo]:
        # Blob names are ASCII, so every name with the prefix sorts below prefix + DEL.
        rows = self._db().execute(
            "SELECT name, size, time_ns FROM blobs WHERE name >= ? AND name < ? ORDER BY name",
            (prefix, prefix + "\x7f"),
        )
        return [BlobInfo(*row) for row in rows]

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        if not items:
            return 0
        _check_names(items)
        return await self._run(self._put_in_transaction, items)

    def _put_in_transaction(self, items: Sequence[tuple[str, bytes]]) -> int:
        with self._write():
            return self._put(items)

    def _put(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Insert the blobs whose names are absent (create-only); returns how many were new."""
        now = time.time_ns()
        cursor = self._db().executemany(
            "INSERT INTO blobs (name, size, time_ns, data) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            ((name, len(data), now, data) for name, data in items),
        )
        return cursor.rowcount  # executemany sums the rows each insert added: 0 for present names

    async def delete_blobs(self, names: Collection[str]) -> int:
        return await self._run(self._delete_blobs, list(set(names)))

    def _delete_blobs(self, names: list[str]) -> int:
        with self._write() as conn:
            gone = 0
            for part in _chunks(names):
                gone += conn.execute(f"DELETE FROM blobs WHERE name IN ({_marks(len(part))})", part).rowcount
            return gone

    # -- refs -----------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._run(self._get_refs, list(names))

    def _get_refs(self, names: list[str]) -> dict[str, bytes]:
        conn = self._db()
        out: dict[str, bytes] = {}
        for part in _chunks(names):
            out.update(conn.execute(f"SELECT name, target FROM refs WHERE name IN ({_marks(len(part))})", part))
        return out

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return await self._run(self._list_refs, prefix)

    def _list_refs(self, prefix: str) -> dict[str, bytes]:
        # Ref names are printable ASCII, so every name with the prefix sorts below prefix + DEL.
        rows = self._db().execute(
            "SELECT name, target FROM refs WHERE name >= ? AND name < ? ORDER BY name", (prefix, prefix + "\x7f")
        )
        return dict(rows)

    def _check(self, checks: Mapping[str, bytes | None]) -> None:
        """ConflictError unless every checked ref holds its expected value (None: absent)."""
        current = self._get_refs(list(checks))
        for name, want in checks.items():
            have = current.get(name)
            if have != want:
                shown = ["absent" if v is None else v.hex()[:12] for v in (have, want)]
                raise ConflictError(f"ref {name} is {shown[0]}, expected {shown[1]}: another writer moved it", name)

    def _update(self, updates: Sequence[RefUpdate], message: str) -> None:
        conn = self._db()
        changes = plan_ref_updates(self._get_refs(list({u.name for u in updates})), updates)
        now = time.time_ns()
        for name, _, new in changes:
            if new is None:
                conn.execute("DELETE FROM refs WHERE name = ?", (name,))
            else:
                conn.execute("INSERT OR REPLACE INTO refs (name, target) VALUES (?, ?)", (name, new))
        conn.executemany(
            "INSERT INTO reflog (name, old, new, time_ns, message) VALUES (?, ?, ?, ?, ?)",
            [(name, old, new, now, message) for name, old, new in changes],
        )

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        return await self._run(self._copy_ref, source, target, expected, message)

    def _copy_ref(self, source: str, target: str, expected: bytes | _Any | None, message: str) -> bytes:
        """Read the source and move the target in one transaction: the source cannot move between."""
        with self._write():
            value = self._get_refs([source]).get(source)
            if value is None:
                raise NotFoundError(f"no ref {source}")
            self._update([RefUpdate(target, value, expected)], message)
            return value

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        return await self._run(self._reflog, name)

    def _reflog(self, name: str | None) -> list[ReflogEntry]:
        conn = self._db()
        sql = "SELECT name, old, new, time_ns, message FROM reflog"
        rows = (
            conn.execute(sql + " ORDER BY seq")
            if name is None
            else conn.execute(sql + " WHERE name = ? ORDER BY seq", (name,))
        )
        return [ReflogEntry(*row) for row in rows]

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        self._db()
        _check_names(blobs)
        return await asyncio.to_thread(self._commit, blobs, updates, message, dict(checks or {}))

    def _commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        message: str,
        checks: dict[str, bytes | None],
    ) -> int:
        """Blobs and refs in one transaction, under the shared side of the gc lock when it stores
        blobs or checks refs (a save: its checks stand for what it found stored).

        The gc lock comes first: a commit waits for gc without holding the mutex gc's deletes need.
        A commit of ref moves alone does not wait, as ``update_refs`` never did: it adds nothing
        gc could delete from under it, a checkpoint must not queue behind a long gc, and gc itself
        moves a ref (the pack store's epoch) while it holds the exclusive side.
        """
        if (not blobs and not checks) or self._shared_held.get():  # a gc_shared holder has it already
            return self._call(self._commit_transaction, blobs, updates, message, checks)
        with self._gc_lock.hold(exclusive=False):
            return self._call(self._commit_transaction, blobs, updates, message, checks)

    def _commit_transaction(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        message: str,
        checks: dict[str, bytes | None],
    ) -> int:
        # One transaction: the blobs are durable when the refs move (the commit makes both
        # durable at once), and a failed check rolls the blobs back too, leaving no garbage.
        with self._write():
            written = self._put(blobs) if blobs else 0
            if checks:
                self._check(checks)
            if updates:
                self._update(updates, message)
            return written

    # -- maintenance ----------------------------------------------------------------------------

    def _new_gc_lock(self) -> FileLock:
        # The turnstile keeps a steady stream of commits from starving gc (see FileLock).
        return FileLock(Path(f"{self.path}-gclock"), self.lock_timeout, turnstile=Path(f"{self.path}-gcturn"))

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        async with self._gc_lock.hold_async(exclusive=True):
            yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        # A lock object of its own: shared holders do not queue behind this process's commits.
        lock = self._new_gc_lock()
        try:
            async with lock.hold_async(exclusive=False):
                # This task's commits need not take it again: doing so could queue behind a
                # waiting gc (the turnstile) that waits for this very holder.
                token = self._shared_held.set(True)
                try:
                    yield
                finally:
                    self._shared_held.reset(token)
        finally:
            lock.close()

    async def expire_reflog(self, before_ns: int) -> int:
        return await self._run(self._expire_reflog, before_ns)

    def _expire_reflog(self, before_ns: int) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM reflog WHERE time_ns < ?", (before_ns,)).rowcount

    async def reclaim(self) -> None:
        await self._run(self._reclaim)

    def _reclaim(self) -> None:
        """Move free pages to the file's end and cut them off, then fold the WAL in and truncate it."""
        conn = self._db()
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
            # A file made before stores used auto_vacuum (format 1): incremental_vacuum does
            # nothing there, and auto_vacuum can only be switched on by a full VACUUM. That
            # rewrites the whole database (time and WAL space in proportion to its size, with
            # the write lock held throughout: other writers wait up to their lock timeout), but
            # only once: afterwards the file is INCREMENTAL and reclaims are cheap. gc runs after
            # `castate upgrade`, which has just rewritten everything anyway.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
        else:
            # The pragma frees one page per step and returns no rows, so sqlite3's execute (one
            # step for a statement without columns) would free one page; executescript steps it to the end.
            conn.executescript("PRAGMA incremental_vacuum;")
        # TRUNCATE leaves the WAL empty (not just reusable) so its space goes back too. With a
        # reader still on an old snapshot it does what it can and reports busy; not an error.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def stats(self) -> dict[str, int]:
        return await self._run(self._stats)

    def _stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._read() as conn:
            out["blobs"], out["blob_bytes"] = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM blobs"
            ).fetchone()
            out["refs"] = conn.execute("SELECT count(*) FROM refs").fetchone()[0]
            out["reflog_entries"] = conn.execute("SELECT count(*) FROM reflog").fetchone()[0]
        apparent = allocated = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(f"{self.path}{suffix}")
                apparent += st.st_size
                allocated += st.st_blocks * 512
        out["bytes_apparent"] = apparent
        out["bytes_allocated"] = allocated
        return out

    # -- format-1 stores --------------------------------------------------------------------------

    async def legacy_objects(self) -> int:
        return await self._run(self._legacy_objects)

    def _legacy_objects(self) -> int:
        conn = self._db()
        if not _has_table(conn, "objects"):
            return 0
        count: int = conn.execute("SELECT count(*) FROM objects").fetchone()[0]
        return count

    async def iter_legacy_frames(self, batch: int = 1000) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        after = b""  # sorts before every id: BLOBs compare bytewise
        while True:
            rows = await self._run(self._legacy_batch, after, batch)
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def _legacy_batch(self, after: bytes, batch: int) -> list[tuple[bytes, bytes]]:
        """The next ``batch`` (id, frame) rows by id: one indexed range read per batch."""
        conn = self._db()
        if not _has_table(conn, "objects"):
            return []
        rows = conn.execute("SELECT id, data FROM objects WHERE id > ? ORDER BY id LIMIT ?", (after, batch))
        return [(bytes(oid), bytes(data)) for oid, data in rows]

    async def drop_legacy(self) -> None:
        await self._run(self._drop_legacy)

    def _drop_legacy(self) -> None:
        """Drop the objects table; the quarantine table too when empty (quarantined rows are kept
        for inspection). The freed pages go back to the file system at the next ``reclaim``."""
        with self._write() as conn:
            if _has_table(conn, "objects"):
                conn.execute("DROP TABLE objects")
            if _has_table(conn, "quarantine") and conn.execute("SELECT 1 FROM quarantine LIMIT 1").fetchone() is None:
                conn.execute("DROP TABLE quarantine")


def _check_names(items: Sequence[tuple[str, bytes]]) -> None:
    """Reject bad blob names before any hop or transaction (they are programming errors)."""
    for name, _ in items:
        check_blob_name(name)
