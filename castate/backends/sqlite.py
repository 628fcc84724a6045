"""The SQLite backend: a whole castate store in one database file, for one machine.

Tables (schema version 1, in ``PRAGMA user_version``)::

    castate_meta (key, value)                      'castate' = 'store', 'id' = store id
    objects      (id, data, size, time_ns)         one row per object frame
    refs         (name, target)                    current ref targets
    reflog       (seq, name, old, new, time_ns, message)
    quarantine   (id, data, time_ns, quarantined_ns)

The database runs in WAL mode, so readers never block the writer. Every public method is
one hop to a worker thread running one transaction on the backend's connection (the
stdlib ``sqlite3``; one hop per call is all the batching the contract needs, so aiosqlite's
per-statement hops would only add cost). Several processes may share the file: writes
serialize on SQLite's write lock (``BEGIN IMMEDIATE``). Saves and gc coordinate through a
flock on ``<file>-gclock`` beside the database, as the local backend does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from castate.backends.base import Backend, ObjectInfo, ReflogEntry, RefUpdate, plan_ref_updates
from castate.backends.local.locks import FileLock
from castate.errors import CorruptFileError, NotFoundError, StoreError, UnsupportedFormatError

SCHEMA_VERSION = 1
BATCH = 500  # ids per IN (...) list, well under SQLite's bound-parameter limit

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE castate_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE objects (
        id BLOB PRIMARY KEY, data BLOB NOT NULL, size INTEGER NOT NULL, time_ns INTEGER NOT NULL);
    CREATE TABLE refs (name TEXT PRIMARY KEY, target BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE reflog (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, old BLOB, new BLOB,
        time_ns INTEGER NOT NULL, message TEXT NOT NULL);
    CREATE INDEX reflog_by_name ON reflog (name, seq);
    CREATE TABLE quarantine (
        id BLOB PRIMARY KEY, data BLOB NOT NULL, time_ns INTEGER NOT NULL, quarantined_ns INTEGER NOT NULL);
    """,
}

Durability = Literal["durable", "relaxed"]
T = TypeVar("T")


def _chunks(ids: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(ids), BATCH):
        yield ids[i : i + BATCH]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SQLiteBackend(Backend):
    """A castate store in one SQLite file (created on first open unless ``create=False``).

    ``durability="durable"`` (default) runs with ``synchronous=FULL``: a save is on disk
    when it returns. ``"relaxed"`` uses ``synchronous=NORMAL``: a power loss may drop the
    last saves (never half of one); a process crash loses nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        create: bool = True,
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

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None:
            await asyncio.to_thread(self._call, self._open_sync)

    def _open_sync(self) -> None:
        if self._conn is not None:
            return
        if not self.path.exists():
            if not self.create:
                raise StoreError(f"no castate store at {self.path}")
            if not self.path.parent.is_dir():
                raise StoreError(f"cannot create {self.path}: {self.path.parent} is not a directory")
            # Private to the owner (state often holds secrets); SQLite gives its -wal and -shm
            # files the database file's permissions.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._migrate(conn)
            meta = dict(conn.execute("SELECT key, value FROM castate_meta").fetchall())
            if meta.get("castate") != "store":
                raise StoreError(f"{self.path} is not a castate store (castate_meta says {meta.get('castate')!r})")
            self.store_id = meta.get("id", "")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise UnsupportedFormatError(
                f"store {self.path} has schema version {version}; this castate reads up to {SCHEMA_VERSION} "
                "(upgrade castate)"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise StoreError(f"{self.path} is an SQLite database but not a castate store")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if v == 1:
                    conn.executemany(
                        "INSERT INTO castate_meta VALUES (?, ?)",
                        [("castate", "store"), ("id", uuid.uuid4().hex), ("created_ns", str(time.time_ns()))],
                    )
                conn.execute(f"PRAGMA user_version={v}")
            conn.execute("COMMIT")
        except BaseException:
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

    # -- objects --------------------------------------------------------------------------------

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        return await self._run(self._get_objects, list(ids))

    def _get_objects(self, ids: list[bytes]) -> dict[bytes, bytes]:
        conn = self._db()
        out: dict[bytes, bytes] = {}
        for part in _chunks(ids):
            out.update(conn.execute(f"SELECT id, data FROM objects WHERE id IN ({_marks(len(part))})", part))
        return out

    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        return await self._run(self._has_objects, list(ids))

    def _has_objects(self, ids: list[bytes]) -> set[bytes]:
        conn = self._db()
        out: set[bytes] = set()
        for part in _chunks(ids):
            out.update(r[0] for r in conn.execute(f"SELECT id FROM objects WHERE id IN ({_marks(len(part))})", part))
        return out

    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        if not items:
            return 0
        return await self._run(self._put_in_transaction, items)

    def _put_in_transaction(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        with self._write():
            return self._put(items)

    def _put(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Insert the absent objects and refresh the write time of the present ones (gc's grace)."""
        conn = self._db()
        now = time.time_ns()
        unique = dict(items)
        present = self._has_objects(list(unique))
        conn.executemany(
            "INSERT INTO objects (id, data, size, time_ns) VALUES (?, ?, ?, ?)",
            [(oid, bytes(f), len(f), now) for oid, f in unique.items() if oid not in present],
        )
        if present:
            conn.executemany("UPDATE objects SET time_ns = ? WHERE id = ?", [(now, oid) for oid in present])
        return len(unique) - len(present)

    async def delete_objects(self, ids: Collection[bytes]) -> int:
        return await self._run(self._delete_objects, list(ids))

    def _delete_objects(self, ids: list[bytes]) -> int:
        with self._write() as conn:
            gone = 0
            for part in _chunks(ids):
                gone += conn.execute(f"DELETE FROM objects WHERE id IN ({_marks(len(part))})", part).rowcount
            return gone

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        rows = await self._run(lambda: self._db().execute("SELECT id, size, time_ns FROM objects").fetchall())
        for oid, size, t in rows:
            yield ObjectInfo(oid, size, t)

    # -- refs -----------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._run(self._get_refs, list(names))

    def _get_refs(self, names: list[str]) -> dict[str, bytes]:
        conn = self._db()
        out: dict[str, bytes] = {}
        for i in range(0, len(names), BATCH):
            part = names[i : i + BATCH]
            out.update(conn.execute(f"SELECT name, target FROM refs WHERE name IN ({_marks(len(part))})", part))
        return out

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return await self._run(self._list_refs, prefix)

    def _list_refs(self, prefix: str) -> dict[str, bytes]:
        # Ref names are printable ASCII, so every name with the prefix sorts below prefix + DEL.
        rows = self._db().execute(
            "SELECT name, target FROM refs WHERE name >= ? AND name < ?", (prefix, prefix + "\x7f")
        )
        return dict(rows)

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        await self._run(self._update_in_transaction, updates, message)

    def _update_in_transaction(self, updates: Sequence[RefUpdate], message: str) -> None:
        with self._write():
            self._update(updates, message)

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

    async def copy_ref(self, source: str, target: str, *, expected: Any = None, message: str = "") -> bytes:
        return await self._run(self._copy_ref, source, target, expected, message)

    def _copy_ref(self, source: str, target: str, expected: Any, message: str) -> bytes:
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
        items: Sequence[tuple[bytes, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        stream: str = "",
        history: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        self._db()
        return await asyncio.to_thread(self._commit, [*items, *history], updates, message)

    def _commit(self, items: Sequence[tuple[bytes, bytes]], updates: Sequence[RefUpdate], message: str) -> int:
        """Objects and refs in one transaction, under the shared side of the gc lock.

        The gc lock comes first: a save waits for gc without holding the mutex gc's deletes need.
        """
        with self._gc_lock.hold(exclusive=False):
            return self._call(self._commit_transaction, items, updates, message)

    def _commit_transaction(
        self, items: Sequence[tuple[bytes, bytes]], updates: Sequence[RefUpdate], message: str
    ) -> int:
        with self._write():
            written = self._put(items) if items else 0
            if updates:
                self._update(updates, message)
            return written

    # -- maintenance ----------------------------------------------------------------------------

    def _new_gc_lock(self) -> FileLock:
        # The turnstile keeps a steady stream of saves from starving gc (see FileLock).
        return FileLock(Path(f"{self.path}-gclock"), self.lock_timeout, turnstile=Path(f"{self.path}-gcturn"))

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        async with self._gc_lock.hold_async(exclusive=True):
            yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        # A lock object of its own: shared holders do not queue behind this process's saves.
        lock = self._new_gc_lock()
        try:
            async with lock.hold_async(exclusive=False):
                yield
        finally:
            lock.close()

    async def expire_reflog(self, before_ns: int) -> int:
        return await self._run(self._expire_reflog, before_ns)

    def _expire_reflog(self, before_ns: int) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM reflog WHERE time_ns < ?", (before_ns,)).rowcount

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        return await self._run(self._quarantine, list(ids))

    def _quarantine(self, ids: list[bytes]) -> int:
        """Move rows to the quarantine table as stored (damaged or not): kept, never read as data."""
        now = time.time_ns()
        with self._write() as conn:
            moved = 0
            for part in _chunks(ids):
                marks = _marks(len(part))
                conn.execute(
                    "INSERT OR REPLACE INTO quarantine (id, data, time_ns, quarantined_ns) "
                    f"SELECT id, data, time_ns, ? FROM objects WHERE id IN ({marks})",
                    (now, *part),
                )
                moved += conn.execute(f"DELETE FROM objects WHERE id IN ({marks})", part).rowcount
            return moved

    async def stats(self) -> dict[str, int]:
        return await self._run(self._stats)

    def _stats(self) -> dict[str, int]:
        conn = self._db()
        objects, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM objects").fetchone()
        out = {
            "objects": objects,
            "object_bytes": size,
            "refs": conn.execute("SELECT count(*) FROM refs").fetchone()[0],
            "reflog_entries": conn.execute("SELECT count(*) FROM reflog").fetchone()[0],
            "quarantined": conn.execute("SELECT count(*) FROM quarantine").fetchone()[0],
        }
        apparent = allocated = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(f"{self.path}{suffix}")
                apparent += st.st_size
                allocated += st.st_blocks * 512
        out["bytes_apparent"] = apparent
        out["bytes_allocated"] = allocated
        return out
