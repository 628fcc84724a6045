"""castate on encrypted stores (issue 21): the same steps as ``castate`` and its backends, on a
store created with a key.

Each system opens its store with ``castate.open(url, key=castate.RawKey(BENCH_KEY))``: a raw
key unlocks through HKDF-SHA256, so no scrypt cost is in any timed call (a passphrase's
scrypt, about 0.4 s per open at the default cost, is measured apart by ``tools.bench.enc_profile``).
Opening the store (and so unlocking it: reading the key slots, deriving the subkeys) is in the
cold restores, as opening a plain store is in theirs.

Disk is measured as for the plain systems; the encrypted and plain systems of one backend
are meant to be run side by side by ``tools.bench.enc``.
"""

from __future__ import annotations

from pathlib import Path

import castate
from tools.bench.systems.castate_backends import CastatePostgres, CastateRedis, CastateSQLite
from tools.bench.systems.castate_sys import CastateSteps

# A fixed 32-byte key (64 hex digits): a bench key, not a secret.
BENCH_KEY = "6c1f0a9e3b7d4c2a8e5f1b0d9c7a3e6f2b4d8a1c5e9f0b3d7a6c2e4f8b1d5a9c"


def key() -> castate.RawKey:
    return castate.RawKey(BENCH_KEY)


class CastateEnc(CastateSteps):
    """``castate`` on an encrypted local store: ``StateManager(castate.open(dir, key=...))``."""

    def __init__(self, durability: str = "durable") -> None:
        super().__init__()
        self.durability = durability
        self.durable = durability == "durable"
        self.name = "castate-enc" if self.durable else "castate-relaxed-enc"

    def _manager(self) -> castate.StateManager:
        assert self.root is not None
        backend = castate.open(str(self.root), durability=self.durability, create=True, key=key())
        return castate.StateManager(backend)

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        self.sm = self._manager()

    async def reopen(self) -> None:
        assert self.sm is not None
        await self.sm.close()
        self.sm = self._manager()


class CastateRelaxedEnc(CastateEnc):
    def __init__(self) -> None:
        super().__init__("relaxed")


class CastateTrackedEnc(CastateEnc):
    """``castate-tracked`` on an encrypted local store."""

    tracked = True

    def __init__(self) -> None:
        super().__init__("durable")
        self.name = "castate-tracked-enc"


class _KeyedReopen:
    """Mixed into the URL systems: every StateManager opens the URL with the bench key."""

    url: str
    sm: castate.StateManager | None

    def manager(self) -> castate.StateManager:
        return castate.StateManager(castate.open(self.url, create=True, key=key()))

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)  # type: ignore[misc]  # the URL system this is mixed into
        self.sm = self.manager()

    async def reopen(self) -> None:
        assert self.sm is not None
        await self.sm.close()
        self.sm = self.manager()


class CastateSQLiteEnc(_KeyedReopen, CastateSQLite):
    name = "castate-sqlite-enc"


class CastatePostgresEnc(_KeyedReopen, CastatePostgres):
    name = "castate-postgres-enc"


class CastateRedisEnc(_KeyedReopen, CastateRedis):
    name = "castate-redis-enc"
