"""castate behind MARSYS's two storage interfaces, with no change to MARSYS code.

``MarsysStorageBackend`` replaces MARSYS 0.2.1's ``FileStorageBackend``: the dict interface
(``save/load/delete/list_keys/exists``) that MARSYS's own ``StateManager`` and
``Orchestra.run(..., state_manager=...)`` call. Values are stored exactly as MARSYS's
``json.dump(data, default=str)`` reads back, so MARSYS's checksums still validate; each key
is a castate ref, so a checkpoint (a near copy of its session) costs only what differs.

``MarsysBytesBackend`` implements the bytes interface of MARSYS's newer design (``read/
write/delete/list_with_metadata/expire_older_than``, keys like ``<session>/snapshot.json``):
a write is a snapshot plus a ref move, JSON payloads are stored by structure so successive
snapshots share their unchanged parts, and reads return the written bytes exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from castate.backends.base import Backend, Durability
from castate.backends.blob import BlobBackend
from castate.backends.local import LocalBackend
from castate.compat.json_bytes import bytes_state, json_state, render
from castate.errors import ConflictError, InvalidKeyError, KeyNotFoundError, UnsupportedValueError
from castate.keys import Secret
from castate.repository import Repository
from castate.repository.refs import check_name, encode_part, kv_ref
from castate.sessions.storage import FileStorageBackend

BYTES = "bytes/"  # ref namespace of MarsysBytesBackend keys
EXPIRE_ATTEMPTS = 5


def marsys_storage_interface() -> type | None:
    """MARSYS 0.2.1's dict ``StorageBackend`` ABC when marsys is installed (None otherwise).

    MARSYS's unreleased design reuses the name for its bytes Protocol; only the dict ABC counts.
    Importing marsys takes seconds, so this runs only when ``MarsysStorageBackend`` is first used.
    """
    try:
        from marsys.coordination.state import StorageBackend
    except ImportError:
        return None
    if "save" not in getattr(StorageBackend, "__abstractmethods__", ()):
        return None
    found: type = StorageBackend
    return found


def marsys_json(data: Any) -> Any:
    """``data`` as MARSYS's FileStorageBackend reads it back: ``json.loads(json.dumps(data, default=str))``.

    Sets, datetimes, bytes and other objects become ``str(obj)``, tuples become lists,
    int/float/bool/None keys become strings, str and int enums become their values.
    """
    try:
        text = json.dumps(data, default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnsupportedValueError(f"json.dumps(default=str) cannot serialize the value: {exc}", "data") from None
    return json.loads(text)


class MarsysJsonStorage(FileStorageBackend):
    """A castate store in ``base_path`` behind MARSYS 0.2.1's dict storage interface.

    ``load`` returns None for a missing key, ``delete`` of a missing key is fine,
    ``list_keys(prefix)`` returns the saved keys that start with ``prefix``, sorted. ``save``
    stores what MARSYS's ``json.dump(data, default=str)`` file would load back, serialized at
    call time, so later changes to the caller's objects do not reach the store.

    Differences from MARSYS's file backend: dicts load with their keys sorted; damaged
    stored data raises a ``CorruptionError`` instead of loading as None; values JSON allows
    but castate cannot hold (NaN, infinities, ints beyond 64 bits, strings with lone
    surrogates) raise ``UnsupportedValueError`` before anything is written.
    ``MarsysStorageBackend`` is this class with MARSYS's own ABC as a base as well.
    ``key`` opens an encrypted store, as ``FileStorageBackend``'s does.
    """

    def __init__(
        self, base_path: str | os.PathLike[str], *, durability: Durability = "durable", key: Secret | None = None
    ) -> None:
        FileStorageBackend.__init__(self, base_path, durability=durability, key=key)

    async def save(self, key: str, data: dict[str, Any]) -> None:
        await self.save_json(key, marsys_json(data))

    async def save_json(self, key: str, value: dict[str, Any]) -> bool:
        """Store a value that is already plain JSON (as ``json.load`` returns it); True if it changed."""
        if type(value) is not dict:
            raise UnsupportedValueError(f"save() takes a dict, not {type(value).__name__}", "data")
        ref = kv_ref(key)
        result = await self.repository.save(ref, value, overwrite=True, message=f"save {ref}"[:200])
        return result.changed


@functools.cache
def _marsys_storage_backend() -> type[MarsysJsonStorage]:
    base = marsys_storage_interface()
    bases: tuple[type, ...] = (MarsysJsonStorage,) if base is None else (MarsysJsonStorage, base)
    doc = "``MarsysJsonStorage``, a subclass of MARSYS's ``StorageBackend`` ABC when marsys is installed."
    return type("MarsysStorageBackend", bases, {"__module__": __name__, "__doc__": doc})


if TYPE_CHECKING:
    MarsysStorageBackend = MarsysJsonStorage
else:

    def __getattr__(name: str) -> Any:
        # Built on first use, so importing this module never imports marsys (slow) by itself.
        if name == "MarsysStorageBackend":
            return _marsys_storage_backend()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class StorageEntry:
    """One stored key of the bytes interface: its size in bytes and when it was last written (UTC)."""

    key: str
    size_bytes: int
    modified_at: datetime


def _storage_entry_type() -> type:
    """MARSYS's own ``StorageEntry`` model when the marsys that uses this backend defines one."""
    module = sys.modules.get("marsys.coordination.state.storage")
    return getattr(module, "StorageEntry", StorageEntry)


def _key_ref(key: object) -> tuple[str, str]:
    """(normalized key, ref) for a key of the bytes interface; ValueError for keys that escape."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, not {type(key).__name__}")
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts:
        raise InvalidKeyError(f"invalid key: {key!r}")
    normal = str(path)
    if normal == ".":
        raise InvalidKeyError(f"invalid key: {key!r}")
    return normal, BYTES + encode_part(check_name(normal, "key"))


class MarsysBytesBackend:
    """A castate store behind the bytes storage interface of MARSYS's newer design.

    ``read`` raises ``FileNotFoundError`` (castate's ``KeyNotFoundError``) for a missing key;
    ``write`` is atomic (a snapshot, then a ref moved by compare-and-swap) and replaces;
    ``delete`` is idempotent; absolute keys and keys with ``..`` raise ``ValueError``.
    ``expire_older_than`` removes refs only: the bytes go at the next gc, and not at all
    while another ref shares them. ``clock`` (epoch seconds) stamps writes and judges ages.
    ``key`` (``castate.Passphrase``, ``castate.RawKey``) opens an encrypted store or makes a
    new, empty one encrypted; without it the key comes from ``CASTATE_PASSWORD``,
    ``CASTATE_KEY`` or ``CASTATE_KEY_FILE`` when the store is encrypted.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Backend | BlobBackend,
        *,
        durability: Durability = "durable",
        clock: Callable[[], float] = time.time,
        key: Secret | None = None,
    ) -> None:
        backend = root if isinstance(root, Backend | BlobBackend) else LocalBackend(root, durability=durability)
        self.repository = Repository(backend, key=key)
        self._clock = clock
        self._entry = _storage_entry_type()

    async def close(self) -> None:
        await self.repository.close()

    async def __aenter__(self) -> MarsysBytesBackend:
        await self.repository.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read(self, key: str) -> bytes:
        normal, ref = _key_ref(key)
        state = await self.repository.load(ref)
        if state is None:
            raise KeyNotFoundError(f"no key {normal!r} in {self.repository.backend.location or 'the store'}")
        return render(state)

    async def write(self, key: str, data: bytes) -> None:
        normal, ref = _key_ref(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UnsupportedValueError(f"write() takes bytes, not {type(data).__name__}", "data")
        data = bytes(data)
        meta = {"size": len(data), "modified_ns": int(self._clock() * 1e9)}
        message = f"write {normal}"[:200]
        structured = json_state(data)
        result = None
        if structured is not None:
            try:
                result = await self.repository.save(ref, structured, meta=meta, overwrite=True, message=message)
            except UnsupportedValueError:  # JSON castate cannot hold (NaN, huge ints): keep the bytes
                result = None
        if result is None:
            result = await self.repository.save(ref, bytes_state(data), meta=meta, overwrite=True, message=message)
        if not result.changed:  # the same bytes again: record the new write time, as a file's mtime would
            await self._touch(ref, result.commit, meta, message)

    async def _touch(self, ref: str, head: bytes, meta: dict[str, Any], message: str) -> None:
        with contextlib.suppress(ConflictError):  # another write replaced the key meanwhile: it is newer
            await self.repository.recommit(ref, head, meta=meta, message=message)

    async def delete(self, key: str) -> None:
        normal, ref = _key_ref(key)
        await self.repository.delete_refs([ref], message=f"delete {normal}"[:200])

    async def _entries(self) -> list[tuple[str, bytes, int, int]]:
        """(ref, commit, size, modified_ns) of every key."""
        refs = await self.repository.list_refs(BYTES)
        commits = await self.repository.read_commits(list(set(refs.values())))
        out = []
        for ref, cid in refs.items():
            meta = commits[cid].meta
            out.append((ref, cid, int(meta.get("size", -1)), int(meta.get("modified_ns", commits[cid].time_ns))))
        return out

    async def list_with_metadata(self) -> list[Any]:
        """Every key with its size and write time (timezone-aware UTC), sorted by key; no bodies are read."""
        entries = [
            self._entry(
                key=unquote(ref[len(BYTES) :], errors="strict"),
                size_bytes=size,
                modified_at=datetime.fromtimestamp(modified / 1e9, UTC),
            )
            for ref, _, size, modified in await self._entries()
        ]
        return sorted(entries, key=lambda e: e.key)

    async def expire_older_than(self, age: timedelta) -> int:
        """Remove every key last written more than ``age`` ago; returns how many went (refs only)."""
        cutoff_ns = int((self._clock() - age.total_seconds()) * 1e9)
        for _ in range(EXPIRE_ATTEMPTS):
            doomed = {ref: cid for ref, cid, _, modified in await self._entries() if modified < cutoff_ns}
            if not doomed:
                return 0
            try:
                await self.repository.delete_refs_at(doomed, message=f"expire older than {age}"[:200])
                return len(doomed)
            except ConflictError:  # a key was written meanwhile: judge again
                continue
        raise ConflictError(f"keys kept changing during {EXPIRE_ATTEMPTS} attempts to expire them")


__all__ = [
    "MarsysBytesBackend",
    "MarsysJsonStorage",
    "MarsysStorageBackend",
    "StorageEntry",
    "marsys_json",
    "marsys_storage_interface",
]
