"""A process that puts blobs into a local store, for tests that kill it at a crash point.

``python -m tests.blob_writer STORE COUNT VOLUME_SIZE`` puts COUNT blobs of 5,000 bytes.
"""

from __future__ import annotations

import asyncio
import sys

from castate.backends.local import LocalBackend


async def main(path: str, count: int, volume_size: int) -> None:
    backend = LocalBackend(path, volume_size=volume_size)
    await backend.open()
    for i in range(count):
        await backend.put_blobs([(f"packs/c{i}", b"c" * 5000)])
    await backend.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
