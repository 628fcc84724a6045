"""Requests to the bucket: the shared plumbing of the S3 backend's parts.

``S3Requests`` holds the two obstore clients (``client.make_store``) and sends every request
through ``_call``, which counts it (``requests``, for benchmarks), bounds how many are in flight
and turns obstore's errors into castate's. FileNotFoundError and the precondition errors pass
through: what they mean (a missing blob, a lost race) is the caller's to decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import obstore
import obstore.exceptions as oe
from obstore.store import S3Store

from castate.backends.s3.client import is_missing_bucket, translate
from castate.errors import StoreError, StoreNotFoundError

T = TypeVar("T")


class Stale(Exception):
    """A conditional write found the object changed (412), or missing (404 on If-Match)."""


class S3Requests:
    """The clients and the request plumbing (``S3Backend`` sets the attributes)."""

    location: str
    requests: int
    _reads: S3Store | None
    _writes: S3Store | None
    _sem: asyncio.Semaphore | None

    async def _writable(self) -> None:
        """Awaited before the first write: ``S3Backend`` probes conditional writes there."""

    def _store(self, *, write: bool = False) -> S3Store:
        store = self._writes if write else self._reads
        if store is None:
            raise StoreError(f"store {self.location} is not open")
        return store

    async def _call(self, what: str, make: Callable[[], Awaitable[T]], *, write: bool = False) -> T:
        """One request, its obstore errors as castate's (FileNotFoundError and the precondition
        errors pass through: callers decide what they mean)."""
        self.requests += 1
        try:
            if self._sem is None:
                return await make()
            async with self._sem:
                return await make()
        except (FileNotFoundError, oe.AlreadyExistsError, oe.PreconditionError, oe.NotModifiedError) as exc:
            if is_missing_bucket(exc):
                raise StoreNotFoundError(f"{what}: the bucket of {self.location} does not exist") from None
            raise
        except StoreError:
            raise  # castate's own (a lease check inside the call)
        except Exception as exc:
            raise translate(exc, what, self.location, write=write) from None

    async def _get(self, key: str, what: str, etag: str | None = None) -> tuple[bytes, str | None, int] | None:
        """(bytes, ETag, LastModified ns) of an object, or None when it does not exist.
        With ``etag``, NotModifiedError when the object still has it."""

        async def run() -> tuple[bytes, str | None, int]:
            options: Any = {"if_none_match": etag} if etag else None
            res = await obstore.get_async(self._store(), key, options=options)
            data = await res.bytes_async()
            return bytes(data), res.meta["e_tag"], ns_of(res.meta["last_modified"])

        try:
            return await self._call(what, run)
        except FileNotFoundError:
            return None

    async def _gather(self, calls: Sequence[Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*calls))

    async def _list(self, prefix: str) -> list[Any]:
        """Every object whose key starts with ``prefix`` (object_store lists whole path segments:
        list the segment above and filter)."""
        base = prefix.rpartition("/")[0]

        async def run() -> list[Any]:
            return [
                m
                for m in await obstore.list(self._store(), base or None).collect_async()
                if m["path"].startswith(prefix)
            ]

        return await self._call("list", run)


async def settle() -> None:
    """Let obstore's runtime threads finish with the Python objects of the last calls.

    A tokio worker drops its references to the asyncio future of a call just after it resolved
    it, taking the GIL to do so; an interpreter that starts finalizing first (a short script, the
    CLI) then aborts the process (SIGABRT, about one exit in ten with obstore 0.12 here). A pause
    of a few switch intervals in the event loop lets those threads take the GIL while it is still
    valid."""
    await asyncio.sleep(0.02)


def ns_of(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
