"""The memory backend passes the blob backend conformance suite (castate.testing)."""

from __future__ import annotations

import subprocess
import sys

from castate.backends.blob import BlobBackend
from castate.backends.memory import MemoryBackend
from castate.testing import BlobBackendTests


class TestMemoryBackend(BlobBackendTests):
    async def make_backend(self) -> BlobBackend:
        return MemoryBackend()


async def test_backends_do_not_share_state() -> None:
    """Each MemoryBackend is a store of its own: nothing is global to the process."""
    one, two = MemoryBackend(), MemoryBackend()
    await one.put_blobs([("packs/a", b"a")])
    await one.update_refs([])
    assert await two.get_blobs(["packs/a"]) == {}
    assert await two.list_blobs() == []


def test_castate_does_not_import_pytest() -> None:
    """Only castate.testing needs pytest: an installed castate runs without it."""
    code = (
        "import sys, castate, castate.backends.blob, castate.backends.memory\n"
        "assert 'pytest' not in sys.modules and '_pytest' not in sys.modules, 'pytest imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
