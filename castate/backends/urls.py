"""Store URLs: which backend a string names.

    ./state, /var/lib/castate, file:///var/lib/castate   the local directory backend
    sqlite:///state.db (relative), sqlite:////abs/state.db  one SQLite file
    postgresql://user:pw@host:5432/db?schema=castate       PostgreSQL (``postgres://`` too)
    redis://host:6379/0?prefix=castate:                    Redis (``rediss://``, ``unix:///path.sock``)
    s3://bucket/prefix?endpoint=http://host:9000&region=r  S3-compatible object storage (``castate[s3]``)
    memory://                                              in-process, for tests

SQLite URLs follow SQLAlchemy's convention: what follows ``sqlite:///`` is the path, so an
absolute path has four slashes. PostgreSQL and Redis URLs are passed to psycopg and
redis-py as they are, less castate's own ``schema`` and ``prefix`` parameters.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from castate.backends.base import Backend
from castate.backends.blob import BlobBackend
from castate.backends.local import LocalBackend
from castate.backends.memory import MemoryBackend
from castate.errors import StoreError
from castate.keys import Secret

POSTGRES_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def scheme_of(target: str | os.PathLike[str]) -> str:
    """The URL scheme of ``target`` in lowercase, or "" for a plain path."""
    if not isinstance(target, str) or "://" not in target:
        return ""
    return target.split("://", 1)[0].lower()


def open_backend(
    target: str | os.PathLike[str],
    *,
    durability: str = "durable",
    create: bool | None = None,
    key: Secret | None = None,
    **options: Any,
) -> Backend | BlobBackend:
    """The backend for a store URL or a directory path, not yet connected.

    A ``Repository`` or ``StateManager`` opens it on first use (or call ``await b.open()``).
    ``create``: where there is no store yet, True creates one when opened, False refuses
    (StoreError naming the place), and None (the default) creates a URL store only when a
    write opens it (a save, an import; ``castate init``), so a mistyped URL read by
    ``list_sessions`` or ``castate sessions`` is an error instead of a new empty store. A
    directory store with None is created when first opened, as the embedded default store
    always was.
    ``durability`` applies to the stores castate writes to disk itself (local directory,
    SQLite); a server's durability is its own configuration. Other keyword arguments go to
    the backend's constructor (e.g. ``timeout=`` for PostgreSQL and Redis).
    ``key`` (``castate.Passphrase``, ``castate.RawKey``) opens an encrypted store, or makes a
    new, empty one encrypted (docs/security.md); without it an encrypted store takes its key
    from ``CASTATE_PASSWORD``, ``CASTATE_KEY`` or ``CASTATE_KEY_FILE``.
    """
    backend = _backend(target, durability, create, options)
    if key is not None:
        if not isinstance(backend, BlobBackend):
            raise StoreError(f"store {target} cannot be encrypted")
        if not isinstance(key, Secret):
            raise TypeError(f"key must be castate.Passphrase(...) or castate.RawKey(...), not {type(key).__name__}")
        backend.secret = key
    return backend


def _backend(
    target: str | os.PathLike[str], durability: str, create: bool | None, options: dict[str, Any]
) -> Backend | BlobBackend:
    scheme = scheme_of(target)
    local_create = True if create is None else create
    if not scheme:
        return LocalBackend(os.fspath(target), durability=durability, create=local_create, **options)  # type: ignore[arg-type]
    assert isinstance(target, str)
    if scheme == "file":
        path = unquote(urlsplit(target).path)
        return LocalBackend(path, durability=durability, create=local_create, **options)  # type: ignore[arg-type]
    if scheme == "memory":
        return MemoryBackend()
    if scheme == "sqlite":
        from castate.backends.sqlite import SQLiteBackend

        path = unquote(target.split("://", 1)[1].split("?", 1)[0])
        if not path.startswith("/") or path == "/":
            raise ValueError(f"bad SQLite URL {target!r}: use sqlite:///relative/path.db or sqlite:////absolute.db")
        return SQLiteBackend(path[1:], durability=durability, create=create, **options)  # type: ignore[arg-type]
    if scheme in POSTGRES_SCHEMES:
        try:
            from castate.backends.postgres import PostgresBackend
        except ImportError as exc:
            raise StoreError(f"{scheme}:// stores need psycopg: pip install 'castate[postgres]' ({exc})") from None
        return PostgresBackend(target, create=create, **options)
    if scheme in REDIS_SCHEMES:
        try:
            from castate.backends.redis import RedisBackend
        except ImportError as exc:
            raise StoreError(f"{scheme}:// stores need redis-py: pip install 'castate[redis]' ({exc})") from None
        return RedisBackend(target, create=create, **options)
    if scheme == "s3":
        try:
            from castate.backends.s3 import S3Backend
        except ImportError as exc:
            raise StoreError(f"s3:// stores need obstore: pip install 'castate[s3]' ({exc})") from None
        return S3Backend(target, create=create, **options)
    raise ValueError(
        f"unknown store URL scheme {scheme!r} in {target!r}: use a directory path, sqlite:///, "
        "postgresql://, redis://, s3:// or memory://"
    )
