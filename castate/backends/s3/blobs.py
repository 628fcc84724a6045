"""Blobs as objects: ``blobs/<name>`` under the store's prefix, written create-only.

A PUT carries ``If-None-Match: *``, so a name that exists keeps its bytes and write time
(blob names are content hashes: the same bytes). A batch's last blob is written after the
others have landed (``put_blobs``). Reads of many blobs go out together (at most
``CONCURRENCY`` in flight); ranges of one blob that lie close together are read by one ranged
GET. Deleting checks each name first (S3's DELETE does not say whether a key existed) and
then deletes in batches of 1,000 keys (DeleteObjects), each fenced by gc's lease (lease.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import obstore
import obstore.exceptions as oe

from castate.backends.blob import BlobInfo, check_blob_name
from castate.backends.s3.client import RefusedError
from castate.backends.s3.requests import S3Requests, ns_of

BLOBS = "blobs/"
RANGE_GAP = 256 << 10  # ranges of one blob closer than this are read by one GET


class BlobRequests(S3Requests):
    """The blob half of the contract."""

    async def _fence(self, what: str) -> None:
        """Called before each delete batch: the gc lock checks here that gc still holds it."""

    def _lease_fresh(self, what: str) -> None:
        """Called right before a delete batch is sent: the gc lock checks its lease's age."""

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(names))
        got = await self._gather([self._get(BLOBS + n, "get_blobs") for n in wanted])
        return {n: g[0] for n, g in zip(wanted, got, strict=True) if g is not None}

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """One GET per run of nearby ranges of a blob (S3 clips a range at the blob's end)."""
        for name, offset, length in ranges:
            if offset < 0 or length < 0:
                raise ValueError(f"bad range ({name!r}, {offset}, {length})")
        spans: list[tuple[str, int, int, list[int]]] = []  # name, start, end, indexes of ranges
        by_name: dict[str, list[int]] = {}
        for i, (name, _, _) in enumerate(ranges):
            by_name.setdefault(name, []).append(i)
        for name, idx in by_name.items():
            idx.sort(key=lambda i: ranges[i][1])
            for i in idx:
                _, off, n = ranges[i]
                if spans and spans[-1][0] == name and off <= spans[-1][2] + RANGE_GAP:
                    last = spans[-1]
                    spans[-1] = (name, last[1], max(last[2], off + n), [*last[3], i])
                else:
                    spans.append((name, off, off + n, [i]))

        async def read(name: str, start: int, end: int) -> bytes | None:
            key = BLOBS + name
            try:
                if end <= start:  # nothing asked: whether the blob exists is the answer
                    await self._call("get_ranges", lambda: obstore.head_async(self._store(), key))
                    return b""
                return bytes(
                    await self._call(
                        "get_ranges", lambda: obstore.get_range_async(self._store(), key, start=start, end=end)
                    )
                )
            except FileNotFoundError:
                return None
            except RefusedError as exc:
                if exc.status == 416:  # the span starts at or past the blob's end
                    return b""
                raise

        datas = await self._gather([read(name, start, end) for name, start, end, _ in spans])
        out: list[bytes | None] = [None] * len(ranges)
        for (_, start, _, idx), data in zip(spans, datas, strict=True):
            for i in idx:
                _, off, n = ranges[i]
                out[i] = None if data is None else data[off - start : off - start + n]
        missing = {ranges[i][0] for i, part in enumerate(out) if part is None}
        return [None if ranges[i][0] in missing else part for i, part in enumerate(out)]

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        return sorted(
            (BlobInfo(meta["path"][len(BLOBS) :], meta["size"], ns_of(meta["last_modified"]))
             for meta in await self._list(BLOBS + prefix)),
            key=lambda i: i.name,
        )  # fmt: skip

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """All blobs but the last in parallel, then the last: S3 has no multi-object write, and
        the last blob of a batch may describe the others (the pack store puts a save's index
        segment after its packs). A crash in between must leave packs no segment lists
        (garbage, found by reading them), never a segment naming packs that are not there."""
        unique = unique_blobs(items)
        if not unique:
            return 0
        await self._writable()
        *first, last = unique.items()
        written = sum(await self._gather([self._put_blob(n, d) for n, d in first])) if first else 0
        return written + await self._put_blob(*last)

    async def _put_blob(self, name: str, data: bytes) -> int:
        try:
            await self._call(
                "put_blobs",
                lambda: obstore.put_async(self._store(), BLOBS + name, data, mode="create", use_multipart=False),
            )
        except (oe.AlreadyExistsError, oe.PreconditionError):
            return 0  # create-only: the name exists (names are content hashes: same bytes)
        return 1

    async def delete_blobs(self, names: Collection[str]) -> int:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return 0
        await self._writable()

        async def exists(name: str) -> bool:
            try:
                await self._call("delete_blobs", lambda: obstore.head_async(self._store(), BLOBS + name))
            except FileNotFoundError:
                return False
            return True

        found = [n for n, ok in zip(wanted, await self._gather([exists(n) for n in wanted]), strict=True) if ok]
        for i in range(0, len(found), 1000):
            keys = [BLOBS + n for n in found[i : i + 1000]]
            await self._fence("delete_blobs")  # each batch: a gc whose lock was taken over stops here

            async def send(keys: list[str] = keys) -> None:
                self._lease_fresh("delete_blobs")  # the last moment before the request leaves
                await obstore.delete_async(self._store(), keys)

            await self._call("delete_blobs", send)
        return len(found)


def unique_blobs(items: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, data in items:
        check_blob_name(name)
        out.setdefault(name, data)
    return out
