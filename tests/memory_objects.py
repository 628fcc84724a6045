"""An in-memory object store for tests of the repository layer: objects and refs in dicts.

The repository reads and writes objects through the object-level ``Backend`` contract. The
tests here that count reads or damage one object use this store, whose objects are plain
frames in a dict, so they test the repository's logic apart from the pack format (which
``castate.backends.MemoryBackend`` runs under, through ``PackStore``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence

from castate.backends.base import Backend, ObjectInfo, ReflogEntry, RefUpdate
from castate.backends.memory import MemoryBackend


class MemoryObjects(Backend):
    """Objects (frames) and refs in dicts; nothing survives the process."""

    location = "memory"

    def __init__(self) -> None:
        self._objects: dict[bytes, tuple[bytes, int]] = {}
        self._refs = MemoryBackend()
        self.quarantine: dict[bytes, bytes] = {}

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

    # Refs are the in-memory blob backend's: one implementation of refs and the reflog.

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return await self._refs.get_refs(names)

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return await self._refs.list_refs(prefix)

    async def update_refs(self, updates: Sequence[RefUpdate], *, message: str = "") -> None:
        await self._refs.update_refs(updates, message=message)

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        return await self._refs.reflog(name)

    async def expire_reflog(self, before_ns: int) -> int:
        return await self._refs.expire_reflog(before_ns)

    async def quarantine_objects(self, ids: Collection[bytes]) -> int:
        moved = 0
        for oid in ids:
            item = self._objects.pop(oid, None)
            if item is not None:
                self.quarantine[oid] = item[0]
                moved += 1
        return moved
