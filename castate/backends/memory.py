"""An in-process blob backend: dicts in memory. For tests, caches and throwaway runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence

from castate.backends.base import ReflogEntry, RefUpdate, plan_ref_updates
from castate.backends.blob import BlobBackend, BlobInfo, check_blob_name
from castate.errors import ConflictError


class MemoryBackend(BlobBackend):
    """Blobs and refs in dicts; nothing survives the process."""

    location = "memory"

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, int]] = {}
        self._refs: dict[str, bytes] = {}
        self._log: list[ReflogEntry] = []
        self._lock = asyncio.Lock()

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        blobs = self._blobs
        return {n: blobs[n][0] for n in names if n in blobs}

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for name, offset, length in ranges:
            item = self._blobs.get(name)
            out.append(None if item is None else item[0][offset : offset + length])
        return out

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        return [BlobInfo(n, len(data), t) for n, (data, t) in sorted(self._blobs.items()) if n.startswith(prefix)]

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        return self._put(items)

    def _put(self, items: Sequence[tuple[str, bytes]]) -> int:
        now = time.time_ns()
        written = 0
        for name, data in items:
            check_blob_name(name)
            if name not in self._blobs:
                self._blobs[name] = (bytes(data), now)
                written += 1
        return written

    async def delete_blobs(self, names: Collection[str]) -> int:
        return sum(self._blobs.pop(n, None) is not None for n in set(names))

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        return {n: self._refs[n] for n in names if n in self._refs}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        return {n: v for n, v in sorted(self._refs.items()) if n.startswith(prefix)}

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        async with self._lock:
            written = self._put(blobs)
            for name, want in (checks or {}).items():
                if self._refs.get(name) != want:
                    raise ConflictError(f"ref {name} moved", name)
            changes = plan_ref_updates(self._refs, updates)
            now = time.time_ns()
            for name, old, new in changes:
                if new is None:
                    self._refs.pop(name, None)
                else:
                    self._refs[name] = new
                self._log.append(ReflogEntry(name, old, new, now, message))
            return written

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        return [e for e in self._log if name is None or e.name == name]

    async def expire_reflog(self, before_ns: int) -> int:
        keep = [e for e in self._log if e.time_ns >= before_ns]
        dropped = len(self._log) - len(keep)
        self._log = keep
        return dropped
