"""An in-memory object store for tests of the repository layer: objects and refs in dicts.

The repository reads and writes objects through the object-level ``Backend`` contract. The
tests here that count reads or damage one object use this store, whose objects are plain
frames in a dict, so they test the repository's logic apart from the pack format (which
``castate.backends.MemoryBackend`` runs under, through ``PackStore``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Sequence

from castate.backends.base import Backend, ObjectInfo, ReflogEntry, RefUpdate, plan_ref_updates


class MemoryObjects(Backend):
    """Objects (frames) and refs in dicts; nothing survives the process."""

    location = "memory"

    def __init__(self) -> None:
        self._objects: dict[bytes, tuple[bytes, int]] = {}
        self._refs: dict[str, bytes] = {}
        self._log: list[ReflogEntry] = []
        self.quarantine: dict[bytes, bytes] = {}
        self._lock = asyncio.Lock()

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        objs = self._objects
        return {i: objs[i][0] for i in ids if i in objs}

    async def has_objects(self, ids: Collection[bytes]) -> set[bytes]:
        return {i for i in ids if i in self._objects}

    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        now = time.time_ns()
        written = 0
        for oid, frame in items:
            if oid in self._objects:
                self._objects[oid] = (self._objects[oid][0], now)  # freshen for gc
            else:
                self._objects[oid] = (bytes(frame), now)
                written += 1
        return written

    async def delete_objects(self, ids: Collection[bytes]) -> int:
        return sum(self._objects.pop(i, None) is not None for i in ids)

    async def iter_objects(self) -> AsyncIterator[ObjectInfo]:
        for oid, (frame, t) in list(self._objects.items()):
            yield ObjectInfo(oid, len(frame), t)

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return {n: self._refs[n] for n in names if n in self._refs}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return {n: v for n, v in self._refs.items() if n.startswith(prefix)}

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        async with self._lock:
            changes = plan_ref_updates(self._refs, updates)
            now = time.time_ns()
            for name, old, new in changes:
                if new is None:
                    self._refs.pop(name, None)
                else:
                    self._refs[name] = new
                self._log.append(ReflogEntry(name, old, new, now, message))

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        return [e for e in self._log if name is None or e.name == name]

    async def expire_reflog(self, before_ns: int) -> int:
        keep = [e for e in self._log if e.time_ns >= before_ns]
        dropped = len(self._log) - len(keep)
        self._log = keep
        return dropped

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        moved = 0
        for oid in ids:
            item = self._objects.pop(oid, None)
            if item is not None:
                self.quarantine[oid] = item[0]
                moved += 1
        return moved
