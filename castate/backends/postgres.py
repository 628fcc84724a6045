"""The PostgreSQL blob backend: one shared store for workers on many machines (psycopg 3, async).

Everything lives in one PostgreSQL schema (``castate`` unless the URL says
``?schema=NAME``)::

    schema_version (version, description, applied_at)   migrations applied so far
    meta       (key, value)                 'castate' = 'store', 'id' = store id
    blobs      (name, data, size, time_ns)  one row per blob (a pack, an index...), create-only
    refs       (name, target)               current ref targets
    reflog     (seq, name, old, new, time_ns, message)
    objects, quarantine                     format-1 tables: only in stores made before format 2
                                            that held objects, until ``drop_legacy()``

The storage format (packs, indexes) lives above, in ``castate.repository.packs``; this module
stores bytes under names and moves refs. A save is one statement,
``SELECT castate.commit_blobs(...)``: a server-side function that takes the shared side of
the store's gc advisory lock (a bare ref move skips it), inserts the blobs (create-only,
``ON CONFLICT DO NOTHING``), checks the refs the caller named, then moves the refs by
compare-and-swap and appends the reflog, all in one transaction and one round trip. gc
holds the exclusive side of that advisory lock on a connection of its own while it
deletes, so no save on any machine is between its reads and its ref move meanwhile;
deletes made under ``gc_exclusive`` go through that connection, so if it drops (and the
lock with it) they fail instead of racing a save. Conflicts raise SQLSTATE ``CAS01``
(message: the ref), a missing ``copy_ref`` source ``CAS02``, and format 1's save function,
disabled once a store has migrated to format 2, ``CAS03``.

Times come from the server's clock (one clock for every writer). Schema migrations are
applied at open, in one transaction under an advisory lock, so two processes opening a
new store at once do not race.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import blake3
import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from castate.backends.base import ReflogEntry, RefUpdate, _Any, check_ref_name
from castate.backends.blob import BlobBackend, BlobInfo, check_blob_name
from castate.errors import (
    BackendUnavailableError,
    ConflictError,
    InvalidKeyError,
    NotFoundError,
    StoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)

T = TypeVar("T")
SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CHECK_BYPASS = 0.5  # seconds after a successful call during which a pooled connection is not re-checked
RETRIES = 5  # for transactions that lost a race on a brand-new ref or a deadlock: they changed nothing
MAX_OFFSET = 2**31 - 2  # substring() takes int4 positions; a bytea holds at most 1 GB anyway
# reclaim's VACUUM FULL of the blobs table (see reclaim): when the table takes more than
# COMPACT_SLACK times what its live rows need (their data, plus ROW_BYTES each for the row, its
# name in the index and its TOAST pointer) plus 1 MiB, those are at most COMPACT_MAX_BYTES,
# and the table's lock comes within COMPACT_LOCK_WAIT seconds.
COMPACT_SLACK = 1.5
COMPACT_MAX_BYTES = 256 << 20
COMPACT_LOCK_WAIT = 2.0
ROW_BYTES = 256

# Each migration is (description, SQL). ``{s}`` is the schema name; the SQL runs in one transaction.
# Never edit an applied migration: stores out there have run it. Append a new one instead.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "objects, refs, reflog, quarantine; commit, update_refs and copy_ref functions",
        """
CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE {s}.objects (
    id bytea PRIMARY KEY, data bytea NOT NULL, size integer NOT NULL, time_ns bigint NOT NULL);
-- frames arrive zstd-compressed: store them out of line without trying to compress them again
ALTER TABLE {s}.objects ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE {s}.refs (name text COLLATE "C" PRIMARY KEY, target bytea NOT NULL);
CREATE TABLE {s}.reflog (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text COLLATE "C" NOT NULL,
    old bytea, new bytea, time_ns bigint NOT NULL, message text NOT NULL);
CREATE INDEX reflog_by_name ON {s}.reflog (name, seq);
CREATE TABLE {s}.quarantine (
    id bytea PRIMARY KEY, data bytea NOT NULL, time_ns bigint NOT NULL, quarantined_ns bigint NOT NULL);

CREATE FUNCTION {s}.now_ns() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint $$;

-- Move one ref by compare-and-swap and log it. p_mode: 'any', 'absent' or 'value' (p_expected).
-- Raises SQLSTATE CAS01 (message: the ref, detail: its current value in hex) on a mismatch.
CREATE FUNCTION {s}.move_ref(p_name text, p_mode text, p_expected bytea, p_new bytea, p_now bigint, p_message text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_cur bytea;
BEGIN
    SELECT target INTO v_cur FROM {s}.refs WHERE name = p_name FOR UPDATE;
    IF (p_mode = 'absent' AND v_cur IS NOT NULL)
       OR (p_mode = 'value' AND (v_cur IS NULL OR v_cur <> p_expected)) THEN
        RAISE EXCEPTION USING ERRCODE = 'CAS01', MESSAGE = p_name, DETAIL = coalesce(encode(v_cur, 'hex'), '');
    END IF;
    IF p_new IS NULL THEN
        DELETE FROM {s}.refs WHERE name = p_name;
    ELSIF v_cur IS NULL THEN
        INSERT INTO {s}.refs (name, target) VALUES (p_name, p_new);  -- a racing creator: unique_violation
    ELSE
        UPDATE {s}.refs SET target = p_new WHERE name = p_name;
    END IF;
    INSERT INTO {s}.reflog (name, old, new, time_ns, message) VALUES (p_name, v_cur, p_new, p_now, p_message);
END $$;

-- A save: objects (put-if-absent, refreshing present ones), then refs, in one transaction.
-- p_gc_key: the gc advisory lock to hold shared, or NULL. Returns how many objects were new.
CREATE FUNCTION {s}.commit(
    p_ids bytea[], p_data bytea[], p_names text[], p_modes text[], p_expected bytea[], p_new bytea[],
    p_message text, p_gc_key bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {s}.now_ns();
    v_written integer := 0;
BEGIN
    IF p_gc_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock_shared(p_gc_key);
    END IF;
    IF cardinality(p_ids) > 0 THEN
        WITH ins AS (
            INSERT INTO {s}.objects (id, data, size, time_ns)
            SELECT i, d, length(d), v_now FROM unnest(p_ids, p_data) AS t(i, d)
            ON CONFLICT (id) DO NOTHING RETURNING 1)
        SELECT count(*) INTO v_written FROM ins;
        IF v_written < cardinality(p_ids) THEN
            UPDATE {s}.objects SET time_ns = v_now WHERE id = ANY(p_ids) AND time_ns < v_now;
        END IF;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_names), 0) LOOP
        PERFORM {s}.move_ref(p_names[i], p_modes[i], p_expected[i], p_new[i], v_now, p_message);
    END LOOP;
    RETURN v_written;
END $$;

-- Point p_target at p_source's commit. Raises CAS02 when p_source does not exist.
CREATE FUNCTION {s}.copy_ref(p_source text, p_target text, p_mode text, p_expected bytea, p_message text)
RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
    v_value bytea;
BEGIN
    SELECT target INTO v_value FROM {s}.refs WHERE name = p_source FOR SHARE;
    IF v_value IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'CAS02', MESSAGE = p_source;
    END IF;
    PERFORM {s}.move_ref(p_target, p_mode, p_expected, v_value, {s}.now_ns(), p_message);
    RETURN v_value;
END $$;
""",
    ),
    (
        "format 2: blobs table and commit_blobs function; empty format-1 tables dropped",
        """
CREATE TABLE {s}.blobs (
    name text COLLATE "C" PRIMARY KEY, data bytea NOT NULL, size integer NOT NULL, time_ns bigint NOT NULL);
-- packs arrive zstd-compressed: store them out of line without trying to compress them again
-- (EXTERNAL also lets substring() read a range without fetching the whole value)
ALTER TABLE {s}.blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- The format-1 tables go when they are empty (every new store, and an old store that held no
-- object), so a new store has no dead tables and legacy_objects() is free for it. When they
-- hold rows they stay, untouched, until `castate upgrade` has copied the objects into packs
-- (drop_legacy). The lock keeps a format-1 writer still running elsewhere from inserting
-- between the check and the drop.
LOCK TABLE {s}.objects, {s}.quarantine IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.objects) THEN
        DROP TABLE {s}.objects;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM {s}.quarantine) THEN
        DROP TABLE {s}.quarantine;
    END IF;
END $$;

-- A format-1 castate still running when the store moved to format 2 would go on writing
-- objects that format 2 does not read (and that `castate upgrade` could miss while it copies):
-- its save function now refuses, with a message saying why.
CREATE OR REPLACE FUNCTION {s}.commit(
    p_ids bytea[], p_data bytea[], p_names text[], p_modes text[], p_expected bytea[], p_new bytea[],
    p_message text, p_gc_key bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'CAS03',
        MESSAGE = 'this store was upgraded to castate storage format 2: upgrade castate to write to it';
END $$;

-- move_ref as in migration 1, plus the ref's advisory lock, taken first: a move of a ref waits
-- for the commit_blobs in flight that checked it, and they for it (see commit_blobs). Row locks
-- could not do it for a ref that does not exist yet. The two-int key space is apart from the
-- gc lock's bigint one.
CREATE OR REPLACE FUNCTION {s}.move_ref(
    p_name text, p_mode text, p_expected bytea, p_new bytea, p_now bigint, p_message text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_cur bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('castate ref {s}'), hashtext(p_name));
    SELECT target INTO v_cur FROM {s}.refs WHERE name = p_name FOR UPDATE;
    IF (p_mode = 'absent' AND v_cur IS NOT NULL)
       OR (p_mode = 'value' AND (v_cur IS NULL OR v_cur <> p_expected)) THEN
        RAISE EXCEPTION USING ERRCODE = 'CAS01', MESSAGE = p_name, DETAIL = coalesce(encode(v_cur, 'hex'), '');
    END IF;
    IF p_new IS NULL THEN
        DELETE FROM {s}.refs WHERE name = p_name;
    ELSIF v_cur IS NULL THEN
        INSERT INTO {s}.refs (name, target) VALUES (p_name, p_new);  -- racing creators took turns above
    ELSE
        UPDATE {s}.refs SET target = p_new WHERE name = p_name;
    END IF;
    INSERT INTO {s}.reflog (name, old, new, time_ns, message) VALUES (p_name, v_cur, p_new, p_now, p_message);
END $$;

-- A save: blobs (create-only: a present name keeps its bytes and its time), then the checks
-- (p_check_values[i] NULL: the ref must be absent), then the ref moves, in one transaction.
-- A check holds the ref's advisory lock shared until the transaction ends: checks of one ref
-- run side by side, a move of it waits (and a check waits for a move in flight), so the ref
-- stays as checked until the commit. An advisory lock lives in memory only, where a row share
-- lock would write the row (a multixact) on every save that checks the same hot ref.
-- p_gc_key: the gc advisory lock to hold shared, or NULL. Returns how many blobs were new.
CREATE FUNCTION {s}.commit_blobs(
    p_blob_names text[], p_blob_data bytea[], p_check_names text[], p_check_values bytea[],
    p_names text[], p_modes text[], p_expected bytea[], p_new bytea[], p_message text, p_gc_key bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint;
    v_written integer := 0;
    v_cur bytea;
BEGIN
    IF p_gc_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock_shared(p_gc_key);
    END IF;
    v_now := {s}.now_ns();  -- after any wait for gc: the time the blobs become visible
    IF cardinality(p_blob_names) > 0 THEN
        WITH ins AS (
            INSERT INTO {s}.blobs (name, data, size, time_ns)
            SELECT n, d, length(d), v_now FROM unnest(p_blob_names, p_blob_data) AS t(n, d)
            ON CONFLICT (name) DO NOTHING RETURNING 1)
        SELECT count(*) INTO v_written FROM ins;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_check_names), 0) LOOP
        PERFORM pg_advisory_xact_lock_shared(hashtext('castate ref {s}'), hashtext(p_check_names[i]));
        SELECT target INTO v_cur FROM {s}.refs WHERE name = p_check_names[i];  -- a fresh snapshot
        IF v_cur IS DISTINCT FROM p_check_values[i] THEN
            RAISE EXCEPTION USING ERRCODE = 'CAS01', MESSAGE = p_check_names[i],
                DETAIL = coalesce(encode(v_cur, 'hex'), '');
        END IF;
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(p_names), 0) LOOP
        PERFORM {s}.move_ref(p_names[i], p_modes[i], p_expected[i], p_new[i], v_now, p_message);
    END LOOP;
    RETURN v_written;
END $$;
""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def _lock_key(schema: str, what: str) -> int:
    """A 64-bit advisory lock key, distinct per schema (store) and purpose."""
    return int.from_bytes(blake3.blake3(f"castate {what} {schema}".encode()).digest()[:8], "big", signed=True)


def _mode(expected: bytes | _Any | None) -> tuple[str, bytes | None]:
    if isinstance(expected, _Any):
        return "any", None
    return ("absent", None) if expected is None else ("value", bytes(expected))


def split_url(url: str) -> tuple[str, str]:
    """(libpq conninfo URL without castate's own parameters, schema name)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "castate"
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


class PostgresBackend(BlobBackend):
    """A castate store in a PostgreSQL database (tables created on first open).

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/db``; any libpq
    parameter may follow in the query string) plus castate's ``schema=NAME``.
    ``timeout`` bounds connecting and each statement (seconds); ``lock_timeout`` bounds how
    long a save waits for gc (and gc for the saves in flight). ``pool_size`` is the most
    connections this backend object opens at once. ``create``: True creates the schema's
    tables on open when missing; False refuses (StoreError); None refuses until a write
    opens it (what ``castate.open`` does).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        timeout: float = 30.0,
        lock_timeout: float = 60.0,
        pool_size: int = 4,
        create: bool | None = True,
    ) -> None:
        conninfo, url_schema = split_url(url)
        schema = schema or url_schema
        if not SCHEMA_RE.fullmatch(schema):
            raise ValueError(f"bad schema name {schema!r}: use lowercase letters, digits and _")
        self.conninfo = conninfo
        self.schema = schema
        self.location = _redact(conninfo) + ("" if schema == "castate" else f" (schema {schema})")
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.pool_size = pool_size
        self.create = create
        self.store_id = ""
        self._gc_key = _lock_key(schema, "gc")
        self._pool: AsyncConnectionPool | None = None
        self._stale = False  # a connection failed: replace the pool before the next call
        self._used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()  # conn -> end of last call
        self._gc_conn: psycopg.AsyncConnection[Any] | None = None
        # True in a task that holds gc_shared (its commits need not ask for the lock again).
        self._shared_held: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"castate-postgres-gc-shared-{id(self)}", default=False
        )
        self._open_lock = asyncio.Lock()
        s = schema
        self._sql_commit = (
            f"SELECT {s}.commit_blobs(%s::text[], %s::bytea[], %s::text[], %s::bytea[], "
            "%s::text[], %s::text[], %s::bytea[], %s::bytea[], %s, %s)"
        )
        self._sql_copy = f"SELECT {s}.copy_ref(%s, %s, %s, %s::bytea, %s)"

    # -- connections ----------------------------------------------------------------------------

    def _conn_kwargs(self, statement_timeout: float | None = None) -> dict[str, Any]:
        if statement_timeout is None:
            statement_timeout = self.timeout + self.lock_timeout
        return {
            "autocommit": True,
            "connect_timeout": max(1, round(self.timeout)),
            "application_name": "castate",
            # statements (a save waiting for gc included) give up server-side
            "options": f"-c statement_timeout={int(statement_timeout * 1000)} "
            f"-c lock_timeout={int(self.lock_timeout * 1000)}",
        }

    async def open(self) -> None:
        async with self._open_lock:
            if self._pool is not None:
                return
            await self._guard(self._migrate(), "open")
            self._pool = await self._new_pool("open")

    async def _new_pool(self, what: str) -> AsyncConnectionPool:
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self.conninfo,
            kwargs=self._conn_kwargs(),
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.timeout,
            check=self._check_connection,
            name=f"castate-{self.schema}",
        )
        try:
            await self._guard(pool.open(wait=True, timeout=self.timeout), what)
        except BaseException:
            await pool.close(timeout=1)
            raise
        return pool

    async def _check_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Make sure a connection the pool hands out is alive, unless it finished a call less than
        ``CHECK_BYPASS`` seconds ago: a steady stream of saves then costs one round trip each,
        not two (the check is an empty query), while a connection left idle is checked first."""
        if time.monotonic() - self._used.get(conn, 0.0) > CHECK_BYPASS:
            await AsyncConnectionPool.check_connection(conn)

    async def _ready_pool(self, what: str) -> AsyncConnectionPool:
        """The pool; after a connection failure, a new one (the old one may be backing off for seconds)."""
        pool = self._require_pool()
        if not self._stale:
            return pool
        async with self._open_lock:
            if self._stale and self._pool is not None:
                fresh = await self._new_pool(what)
                old, self._pool, self._stale = self._pool, fresh, False
                await old.close(timeout=1)
            return self._require_pool()

    async def _migrate(self) -> None:
        s = self.schema
        async with (
            await psycopg.AsyncConnection.connect(self.conninfo, **self._conn_kwargs()) as conn,
            conn.transaction(),
        ):
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(s, "migrate"),))
            exists = await (
                await conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (s,))
            ).fetchone()
            tables: set[str] = set()
            if exists:
                tables = {
                    r[0]
                    for r in await (
                        await conn.execute(
                            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (s,)
                        )
                    ).fetchall()
                }
                if tables and "schema_version" not in tables:
                    raise StoreError(f"schema {s} of {self.location} holds tables but is not a castate store")
            if self.create is not True and (not exists or "schema_version" not in tables):
                later = " (a save creates it)" if self.create is None else ""
                raise StoreNotFoundError(f"no castate store at {self.location}{later}")
            if not exists:
                await conn.execute(f"CREATE SCHEMA {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer PRIMARY KEY, "
                "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = await (await conn.execute(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")).fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise UnsupportedFormatError(
                    f"store {self.location} has schema version {version}; this castate reads up to "
                    f"{SCHEMA_VERSION} (upgrade castate)"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                description, sql = MIGRATIONS[v - 1]
                await conn.execute(sql.replace("{s}", s).encode())
                await conn.execute(
                    f"INSERT INTO {s}.schema_version (version, description) VALUES (%s, %s)", (v, description)
                )
                if v == 1:
                    await conn.execute(f"INSERT INTO {s}.meta VALUES ('castate', 'store'), ('id', md5(random()::text))")
            meta = dict(await (await conn.execute(f"SELECT key, value FROM {s}.meta")).fetchall())
            if meta.get("castate") != "store":
                raise StoreError(f"schema {s} of {self.location} is not a castate store")
            self.store_id = meta.get("id", "")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _require_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StoreError(f"store {self.location} is not open")
        return self._pool

    async def _guard(self, aw: Awaitable[T], what: str) -> T:
        """Await ``aw``, turning psycopg's errors into castate's."""
        try:
            return await aw
        except psycopg.Error as exc:
            raise self._error(exc, what) from exc

    def _error(self, exc: psycopg.Error, what: str) -> Exception:
        code = getattr(exc, "sqlstate", None)
        if code == "CAS01":
            diag = exc.diag
            ref = diag.message_primary or "?"
            have = diag.message_detail or ""
            return ConflictError(
                f"ref {ref} is {have[:12] or 'absent'}, not what this writer expected: another writer moved it", ref
            )
        if code == "CAS02":
            return NotFoundError(f"no ref {exc.diag.message_primary}")
        if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
            detail = (exc.diag.message_primary or str(exc)).strip()
            return InvalidKeyError(
                f"{what}: a ref name is too long for the index on {self.location} ({detail}); "
                "use a shorter session id or checkpoint name"
            )
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return StoreError(f"{what}: timed out after {self.lock_timeout:.0f}s waiting for gc on {self.location}")
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return BackendUnavailableError(f"{what}: {self.location} did not answer in time ({exc})")
        if isinstance(exc, PoolTimeout):
            return BackendUnavailableError(
                f"{what}: no connection to {self.location} within {self.timeout:.0f}s (is the server up?)"
            )
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            unknown = " (the connection broke mid-call: the refs moved whole or not at all; reload to see)"
            return BackendUnavailableError(
                f"{what}: lost or could not open the connection to {self.location}: {detail}"
                + (unknown if what in ("commit", "update_refs", "copy_ref") else "")
            )
        return StoreError(f"{what} on {self.location}: {exc}")

    async def _call(
        self, what: str, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, idempotent: bool
    ) -> T:
        """Run ``fn`` on a pooled connection; retry once on a dropped connection when that is safe."""
        attempts = 2 if idempotent else 1
        for attempt in range(RETRIES):
            try:
                pool = await self._ready_pool(what)
                async with pool.connection() as conn:
                    result = await fn(conn)
                    self._used[conn] = time.monotonic()
                    return result
            except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
                # a racing writer created the same new ref first, or the two locked refs in opposite
                # orders: the transaction rolled back whole, so running it again is safe
                if attempt + 1 < RETRIES:
                    await asyncio.sleep(0.001 * (attempt + 1))
                    continue
                raise ConflictError(f"{what}: kept losing races against other writers on {self.location}") from None
            except psycopg.OperationalError as exc:
                if not isinstance(exc, psycopg.errors.QueryCanceled):
                    self._stale = True
                    if attempt + 1 < attempts and not isinstance(exc, PoolTimeout):
                        continue
                raise self._error(exc, what) from exc
            except psycopg.Error as exc:
                raise self._error(exc, what) from exc
        raise AssertionError("unreachable")

    async def _fetch(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.cursor(binary=True).execute(sql, params)
            return await cur.fetchall()

        return await self._call(what, run, idempotent=True)

    async def _maintenance(self, what: str, sql: str, params: Sequence[Any]) -> int:
        """A write gc makes: on the gc lock's own connection while ``gc_exclusive`` is held."""
        gc_conn = self._gc_conn
        if gc_conn is not None:
            cur = await self._guard(gc_conn.execute(sql, params), f"{what} (under the gc lock)")
            return cur.rowcount

        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            return (await conn.execute(sql, params)).rowcount

        return await self._call(what, run, idempotent=False)

    # -- blobs ----------------------------------------------------------------------------------

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        if not names:
            return {}
        rows = await self._fetch(
            "get_blobs", f"SELECT name, data FROM {self.schema}.blobs WHERE name = ANY(%s::text[])", (list(names),)
        )
        return {name: bytes(data) for name, data in rows}

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        if not ranges:
            return []
        names, offsets, lengths = [], [], []
        for name, offset, length in ranges:
            if offset < 0 or length < 0:
                raise ValueError(f"bad range {offset}+{length} of blob {name[:80]!r}")
            names.append(name)
            offsets.append(min(offset, MAX_OFFSET))
            lengths.append(min(length, MAX_OFFSET - min(offset, MAX_OFFSET)))
        # data is stored EXTERNAL (uncompressed out of line), so substring() fetches only the
        # TOAST chunks that hold the range, not the whole pack
        rows = await self._fetch(
            "get_ranges",
            f"SELECT substring(b.data FROM r.o + 1 FOR r.l) "
            f"FROM unnest(%s::text[], %s::int[], %s::int[]) WITH ORDINALITY AS r(n, o, l, i) "
            f"LEFT JOIN {self.schema}.blobs b ON b.name = r.n ORDER BY r.i",
            (names, offsets, lengths),
        )
        return [None if data is None else bytes(data) for (data,) in rows]

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        # names are ASCII in "C" order, so every name with the prefix sorts below prefix + DEL
        rows = await self._fetch(
            "list_blobs",
            f"SELECT name, size, time_ns FROM {self.schema}.blobs WHERE name >= %s AND name < %s ORDER BY name",
            (prefix, prefix + "\x7f"),
        )
        return [BlobInfo(name, int(size), int(t)) for name, size, t in rows]

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store blobs create-only in one statement; unlike ``commit`` it does not wait for gc."""
        if not items:
            return 0
        return await self._commit(items, (), None, "", gc=False, what="put_blobs")

    async def delete_blobs(self, names: Collection[str]) -> int:
        if not names:
            return 0
        sql = f"DELETE FROM {self.schema}.blobs WHERE name = ANY(%s::text[])"
        return await self._maintenance("delete_blobs", sql, (sorted(set(names)),))

    # -- refs -----------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        if not names:
            return {}
        rows = await self._fetch(
            "get_refs", f"SELECT name, target FROM {self.schema}.refs WHERE name = ANY(%s::text[])", (list(names),)
        )
        return {name: bytes(target) for name, target in rows}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        # names are printable ASCII in "C" order, so every name with the prefix sorts below prefix + DEL
        rows = await self._fetch(
            "list_refs",
            f"SELECT name, target FROM {self.schema}.refs WHERE name >= %s AND name < %s ORDER BY name",
            (prefix, prefix + "\x7f"),
        )
        return {name: bytes(target) for name, target in rows}

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        """Move refs only, without waiting for gc (see ``commit``)."""
        if updates:
            await self._commit((), updates, None, message, gc=False, what="update_refs")

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        """One ``commit_blobs`` statement. A save (blobs or checks) waits, up to ``lock_timeout``,
        while gc holds its lock; a bare ref move does not, like ``update_refs`` (it writes
        nothing gc could be deleting, and gc itself moves refs while it holds the lock)."""
        # A task inside gc_shared holds the shared lock already; asking again on another
        # connection would queue behind a waiting gc, which waits for that task.
        gc = (bool(blobs) or bool(checks)) and not self._shared_held.get()
        return await self._commit(blobs, updates, checks, message, gc=gc, what="commit")

    async def _commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        checks: Mapping[str, bytes | None] | None,
        message: str,
        *,
        gc: bool,
        what: str,
    ) -> int:
        """One ``commit_blobs`` call: one statement, one transaction, one round trip."""
        unique: dict[str, bytes] = {}
        for name, data in blobs:
            check_blob_name(name)
            unique[name] = bytes(data)
        # inserting in name order: two saves that share blobs cannot wait for each other in a cycle
        blob_names = sorted(unique)
        check_names = list(checks or {})
        check_values = [None if v is None else bytes(v) for v in (checks or {}).values()]
        names, modes, expected, new = [], [], [], []
        for u in updates:
            check_ref_name(u.name)
            mode, exp = _mode(u.expected)
            names.append(u.name)
            modes.append(mode)
            expected.append(exp)
            new.append(None if u.new is None else bytes(u.new))
        params = (
            blob_names,
            [unique[n] for n in blob_names],
            check_names,
            check_values,
            names,
            modes,
            expected,
            new,
            message,
            self._gc_key if gc else None,
        )

        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            row = await (await conn.execute(self._sql_commit, params)).fetchone()
            return int(row[0]) if row else 0

        return await self._call(what, run, idempotent=False)

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        """Read ``source`` and move ``target`` in one server-side call (``copy_ref`` function)."""
        check_ref_name(target)
        mode, exp = _mode(expected)

        async def run(conn: psycopg.AsyncConnection[Any]) -> bytes:
            row = await (await conn.execute(self._sql_copy, (source, target, mode, exp, message))).fetchone()
            assert row is not None
            return bytes(row[0])

        return await self._call("copy_ref", run, idempotent=False)

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        sql = f"SELECT name, old, new, time_ns, message FROM {self.schema}.reflog"
        if name is None:
            rows = await self._fetch("reflog", sql + " ORDER BY seq")
        else:
            rows = await self._fetch("reflog", sql + " WHERE name = %s ORDER BY seq", (name,))
        return [
            ReflogEntry(n, None if o is None else bytes(o), None if w is None else bytes(w), int(t), m)
            for n, o, w, t, m in rows
        ]

    async def expire_reflog(self, before_ns: int) -> int:
        return await self._maintenance(
            "expire_reflog", f"DELETE FROM {self.schema}.reflog WHERE time_ns < %s", (before_ns,)
        )

    # -- maintenance ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        """Hold the store's gc lock exclusive on a dedicated connection (waits for saves in flight).

        ``delete_blobs`` and ``expire_reflog`` run on that connection meanwhile: if it drops,
        the lock goes with it and they fail rather than delete while saves run."""
        self._require_pool()
        if self._gc_conn is not None:
            raise StoreError(f"gc_exclusive is already held by this backend on {self.location}")
        conn = await self._guard(psycopg.AsyncConnection.connect(self.conninfo, **self._conn_kwargs()), "gc_exclusive")
        try:
            await self._guard(conn.execute("SELECT pg_advisory_lock(%s)", (self._gc_key,)), "gc_exclusive")
            self._gc_conn = conn
            try:
                yield
            finally:
                self._gc_conn = None
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (self._gc_key,))
        finally:
            await conn.close()  # a closed session releases its advisory locks in any case

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        """Hold the gc lock shared on a dedicated connection while an import spans several calls."""
        self._require_pool()
        conn = await self._guard(psycopg.AsyncConnection.connect(self.conninfo, **self._conn_kwargs()), "gc_shared")
        try:
            await self._guard(conn.execute("SELECT pg_advisory_lock_shared(%s)", (self._gc_key,)), "gc_shared")
            token = self._shared_held.set(True)
            try:
                yield
            finally:
                self._shared_held.reset(token)
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT pg_advisory_unlock_shared(%s)", (self._gc_key,))
        finally:
            await conn.close()  # a closed session releases its advisory locks in any case

    async def now_ns(self) -> int:
        rows = await self._fetch("now_ns", f"SELECT {self.schema}.now_ns()")
        return int(rows[0][0])

    async def reclaim(self) -> None:
        """``VACUUM`` the blobs and reflog tables, then give the blobs table's free space back
        with ``VACUUM FULL`` when it is large and the table small enough to copy quickly.

        PostgreSQL never overwrites a deleted row in place: a vacuum marks its space free for
        new rows (autovacuum would too, but only once enough rows died, so gc's space would
        otherwise wait). The files do not shrink, except for empty pages at their end, and gc
        writes the packs it merges before it deletes the old ones, so after a plain vacuum a
        store that gc merged takes more room than before it (4.03x the ideal against 2.71x
        for the benchmark's 1,000 saves, docs/performance.md). ``VACUUM FULL`` rewrites the
        table without its free space, under an exclusive lock: every read and save of the
        store waits while it copies. So it runs only when the blobs table (rows, TOAST and
        indexes) takes more than ``COMPACT_SLACK`` times what its live rows need plus 1 MiB,
        and those hold at most ``COMPACT_MAX_BYTES`` (a copy of a few seconds at most); and
        it waits at most ``COMPACT_LOCK_WAIT`` seconds for the lock (reads and saves in
        flight), giving up quietly. A larger store keeps the free space for new rows; run
        ``VACUUM FULL`` in a quiet window if its disk must shrink. ``SKIP_LOCKED``: a vacuum
        already running (autovacuum) is left to finish the job. It runs without a statement
        timeout, on a connection of its own: stopping a vacuum half way wastes it. A role
        that does not own the tables gets a server warning and no vacuum."""
        self._require_pool()
        s = self.schema
        conn = await self._guard(
            psycopg.AsyncConnection.connect(self.conninfo, **self._conn_kwargs(statement_timeout=0)), "reclaim"
        )
        try:
            await self._guard(conn.execute(f"VACUUM (SKIP_LOCKED) {s}.blobs, {s}.reflog"), "reclaim")
            row = await (
                await self._guard(
                    conn.execute(
                        f"SELECT pg_total_relation_size(%s::regclass), coalesce(sum(size), 0), count(*) FROM {s}.blobs",
                        (f"{s}.blobs",),
                    ),
                    "reclaim",
                )
            ).fetchone()
            assert row is not None
            total, data, rows = (int(x) for x in row)
            live = data + rows * ROW_BYTES
            if live <= COMPACT_MAX_BYTES and total > COMPACT_SLACK * live + (1 << 20):
                await self._guard(conn.execute(f"SET lock_timeout = {int(COMPACT_LOCK_WAIT * 1000)}"), "reclaim")
                with contextlib.suppress(psycopg.errors.LockNotAvailable):
                    await conn.execute(f"VACUUM FULL {s}.blobs")
        finally:
            await conn.close()

    async def stats(self) -> dict[str, int]:
        """Counts, and ``store_bytes``: pg_total_relation_size (rows, TOAST and indexes) of every
        table in the schema, format-1 ones included while they remain."""
        s = self.schema
        rows = await self._fetch(
            "stats",
            f"SELECT (SELECT count(*) FROM {s}.blobs), (SELECT coalesce(sum(size), 0) FROM {s}.blobs), "
            f"(SELECT count(*) FROM {s}.refs), (SELECT count(*) FROM {s}.reflog), "
            "(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r')",
            (s,),
        )
        blobs, blob_bytes, refs, log, store_bytes = (int(x) for x in rows[0])
        return {
            "blobs": blobs,
            "blob_bytes": blob_bytes,
            "refs": refs,
            "reflog_entries": log,
            "store_bytes": store_bytes,
        }

    # -- format-1 stores ------------------------------------------------------------------------

    async def _has_legacy(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        row = await (await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self.schema}.objects",))).fetchone()
        return bool(row and row[0])

    async def legacy_objects(self) -> int:
        """Rows of the format-1 ``objects`` table; 0 once it is gone (new stores never keep it)."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            if not await self._has_legacy(conn):
                return 0
            row = await (await conn.execute(f"SELECT count(*) FROM {self.schema}.objects")).fetchone()
            return int(row[0]) if row else 0

        return await self._call("legacy_objects", run, idempotent=True)

    async def iter_legacy_frames(self, batch: int = 1000) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """The format-1 (id, frame) rows in id order, ``batch`` per query (keyset pagination:
        each page starts after the last id of the previous one, so no page rescans the table)."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if not await self._call("iter_legacy_frames", self._has_legacy, idempotent=True):
            return
        sql = f"SELECT id, data FROM {self.schema}.objects WHERE id > %s ORDER BY id LIMIT %s"
        after = b""  # every id sorts after the empty bytea
        while True:
            rows = await self._fetch("iter_legacy_frames", sql, (after, batch))
            if not rows:
                return
            yield [(bytes(oid), bytes(data)) for oid, data in rows]
            if len(rows) < batch:
                return
            after = bytes(rows[-1][0])

    async def drop_legacy(self) -> None:
        """Drop the format-1 ``objects`` table (a drop frees its files at once, unlike a delete).

        A format-1 ``quarantine`` table that holds rows is kept: it is damage fsck set aside."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(f"DROP TABLE IF EXISTS {self.schema}.objects")

        await self._call("drop_legacy", run, idempotent=True)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


__all__ = ["SCHEMA_VERSION", "PostgresBackend", "split_url"]
