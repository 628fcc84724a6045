"""Running the reliability tests on encrypted stores too (issue 21: "the kill -9, fault,
corruption and racing-writer tests pass on an encrypted store").

A test parametrized with ``ENCRYPTION`` (or ``ENCRYPTION_FULL``, whose encrypted case runs
only with ``CASTATE_FULL=1``) calls ``use_encryption``: for the encrypted case it sets
``CASTATE_KEY`` in the environment, which the writer scripts (tests/crash_writer.py and the
others) read to create their store encrypted and every later opener reads to open it, in the
test process and in every subprocess it starts.
"""

from __future__ import annotations

import os

import pytest

import castate
from castate.backends.blob import BlobBackend
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, RawKey, Secret, secret_from_env
from castate.repository.crypto.slots import read_slots
from tests.full_run import FULL

TEST_KEY = "5e" * 32  # a raw key (hex), so no scrypt cost per open

ENCRYPTION = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
# The encrypted case of a long test: CASTATE_FULL=1 only.
ENCRYPTION_FULL = pytest.mark.parametrize(
    "encrypted", [False, True] if FULL else [False], ids=["plain", "encrypted"][: 2 if FULL else 1]
)


def use_encryption(monkeypatch: pytest.MonkeyPatch, encrypted: bool) -> None:
    """Set ``CASTATE_KEY`` for the encrypted case (writers make their stores with it, openers
    open them with it, here and in subprocesses); no key at all for the plain case."""
    for name in (ENV_PASSWORD, ENV_KEY, ENV_KEY_FILE):
        monkeypatch.delenv(name, raising=False)
    if encrypted:
        monkeypatch.setenv(ENV_KEY, TEST_KEY)


def env_key() -> Secret | None:
    """The key a writer makes its store with: ``CASTATE_KEY`` etc., or None (a plain store)."""
    return secret_from_env()


def the_key() -> RawKey:
    return RawKey(TEST_KEY)


async def is_encrypted(target: str | os.PathLike[str]) -> bool:
    """Whether the store at ``target`` has key slots (read below the encryption)."""
    blobs = castate.open(target, create=False)
    assert isinstance(blobs, BlobBackend)
    await blobs.open()
    try:
        return bool(await read_slots(blobs))
    finally:
        await blobs.close()
