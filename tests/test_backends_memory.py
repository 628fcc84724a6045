"""The memory backend passes the conformance suite."""

from __future__ import annotations

from castate.backends import Backend, MemoryBackend
from tests.backend_conformance import BackendConformance


class TestMemoryBackend(BackendConformance):
    async def make_backend(self) -> Backend:
        return MemoryBackend()
