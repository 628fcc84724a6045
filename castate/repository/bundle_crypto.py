"""The envelope of a bundle exported from an encrypted store (docs/format.md §5.1).

A plaintext key header carries copies of the source store's key slots, so whatever opens the
store (its passphrase, its raw key, its KMS) opens the bundle; everything after it is the
plain bundle layout (§5) cut into records of 1 MiB, each sealed with AES-256-GCM under a
key made for this file alone (blake3 of a random salt, keyed with a bundle key derived from
the store's master key). A record's nonce is its index, and its associated data binds the
key header, the index and whether it is the last record, so records cannot be swapped,
dropped, repeated or cut off, and the header cannot be changed, without the next record
failing to open.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from castate.errors import CorruptFileError, KeyRequiredError, StoreError, UnsupportedFormatError, WrongKeyError
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, Secret, secret_from_env
from castate.repository.crypto.slots import (
    KEYS_PREFIX,
    MAX_SLOTS,
    KeySlot,
    StoreKeys,
    parse_slot,
    read_slots,
    unlock,
)
from castate.repository.packs.store import PackStore

ENCRYPTED_VERSION = 2  # the version byte of an encrypted bundle's outer header
CIPHER = "castate-bundle-1"  # AES-256-GCM records of 1 MiB, keys as below
RECORD = 1 << 20  # plaintext bytes of every record but the last, which holds 0 to RECORD - 1
TAG = 16
SALT = 32
MAX_KEY_HEADER = 1 << 20  # 64 slots of at most 4 KiB each fit many times over
_NONCE = struct.Struct("<Q4x")
_AD_TAIL = struct.Struct("<QB")

#: Where ``castate import`` finds a bundle's key when the code gives none (before trying the
#: destination store's own key): a passphrase, a raw key, a file holding a raw key.
ENV_BUNDLE_PASSWORD = "CASTATE_BUNDLE_PASSWORD"
ENV_BUNDLE_KEY = "CASTATE_BUNDLE_KEY"
ENV_BUNDLE_KEY_FILE = "CASTATE_BUNDLE_KEY_FILE"


def bundle_secret_from_env(environ: Mapping[str, str] | None = None) -> Secret | None:
    """The bundle key the environment gives (``CASTATE_BUNDLE_PASSWORD``, ``CASTATE_BUNDLE_KEY``
    or the file ``CASTATE_BUNDLE_KEY_FILE`` names, the first one set), or None."""
    env = os.environ if environ is None else environ
    return secret_from_env(
        {
            ENV_PASSWORD: env.get(ENV_BUNDLE_PASSWORD, ""),
            ENV_KEY: env.get(ENV_BUNDLE_KEY, ""),
            ENV_KEY_FILE: env.get(ENV_BUNDLE_KEY_FILE, ""),
        }
    )


def _file_key(bundle_key: bytes, salt: bytes) -> bytes:
    """This file's key: the salt, hashed with the store's bundle key (``StoreKeys.bundle_key``,
    derived from the master key: docs/format.md §7.1)."""
    return blake3.blake3(salt, key=bundle_key).digest()


def _ad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + _AD_TAIL.pack(index, 1 if final else 0)


def _unlock(slots: list[KeySlot], secret: Secret) -> StoreKeys | None:
    """The keys of the bundle's store if ``secret`` opens one of its slots (the store's own
    search: hostile slots skipped, key derivation bounded), else None."""
    try:
        return unlock(slots, secret, "the bundle")
    except WrongKeyError:
        return None


# -- export ------------------------------------------------------------------------------


async def source_keys(store: PackStore) -> tuple[list[KeySlot], bytes]:
    """The key slots of an open encrypted store and its bundle key (no KDF runs again)."""
    keys = store.keys
    if keys is None:
        raise StoreError(f"store {store.location} is not encrypted (or not open)")
    return await read_slots(store.raw), keys.bundle_key


class Sealer:
    """Turns the plain bundle stream into the encrypted file: ``start`` is the file's first
    bytes (header and key header), ``feed`` returns the records completed so far and
    ``finish`` the last record (always one, possibly holding no plaintext)."""

    def __init__(self, slots: list[KeySlot], bundle_key: bytes, head: Callable[[bytes], bytes]) -> None:
        salt = os.urandom(SALT)
        body = {
            "castate": "bundle",
            "cipher": CIPHER,
            "salt": base64.b64encode(salt).decode("ascii"),
            "store": slots[0].store,
            "slots": [json.loads(s.encode()) for s in slots],
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self.start = head(raw)  # the outer header, then the key header
        self._digest = blake3.blake3(self.start).digest()
        self._aead = AESGCM(_file_key(bundle_key, salt))
        self._pending = bytearray()
        self._index = 0

    def _seal(self, data: bytes | bytearray, final: bool) -> bytes:
        out = self._aead.encrypt(_NONCE.pack(self._index), bytes(data), _ad(self._digest, self._index, final))
        self._index += 1
        return out

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        out = []
        while len(self._pending) >= RECORD:
            out.append(self._seal(self._pending[:RECORD], False))
            del self._pending[:RECORD]
        return b"".join(out)

    def finish(self) -> bytes:
        out = self._seal(self._pending, True)
        self._pending.clear()
        return out


# -- import ------------------------------------------------------------------------------


def parse_key_header(raw: bytes, path: str) -> tuple[str, list[KeySlot], bytes]:
    """(source store id, its key slots, salt) from an encrypted bundle's key header."""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("castate") != "bundle" or "cipher" not in body:
            raise ValueError("not a bundle key header")
        if body.get("cipher") != CIPHER:
            raise UnsupportedFormatError(
                f"{path} is encrypted with {body.get('cipher')!r}, which this castate does not read"
            )
        store, salt_text, listed = body["store"], body["salt"], body["slots"]
        if not isinstance(store, str) or not isinstance(listed, list) or not listed:
            raise ValueError("no store id or no key slots")
        if len(listed) > MAX_SLOTS:  # each may cost a reader a KDF run
            raise ValueError(f"{len(listed)} key slots (castate reads at most {MAX_SLOTS})")
        salt = base64.b64decode(salt_text, validate=True)
        if len(salt) != SALT:
            raise ValueError("bad salt")
        slots = []
        for item in listed:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ValueError("bad key slot")
            slots.append(parse_slot(KEYS_PREFIX + item["id"], json.dumps(item).encode("utf-8")))
    except CorruptFileError as exc:
        raise CorruptFileError(path, f"a key slot of the bundle: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(path, f"unreadable key header: {exc}") from None
    if any(s.store != store for s in slots):
        raise CorruptFileError(path, "key slots of another store in the key header")
    return store, slots, salt


async def open_bundle(
    slots: list[KeySlot], secret: Secret | None, fallback: Secret | None, path: str, store: str
) -> StoreKeys:
    """The keys of the bundle's store, derived from its master key. ``secret`` is the
    bundle key given (a wrong one is WrongKeyError); without one, ``fallback`` (the key of
    the store the bundle goes into, which opens bundles of that store) is tried."""
    where = f"bundle {path}"
    if secret is not None:
        got = await asyncio.to_thread(_unlock, slots, secret)
        if got is None:
            kinds = ", ".join(sorted({s.kind for s in slots}))
            raise WrongKeyError(
                f"the bundle key given opens none of the {len(slots)} key slots of {where} (kinds: {kinds})"
            )
    else:
        got = await asyncio.to_thread(_unlock, slots, fallback) if fallback is not None else None
        if got is None:
            raise KeyRequiredError(
                f"{where} is encrypted (store {store}): give its store's key (key=castate.Passphrase(...) or "
                f"castate.RawKey(...), or set {ENV_BUNDLE_PASSWORD}, {ENV_BUNDLE_KEY} or {ENV_BUNDLE_KEY_FILE})"
                + ("; the key of the store it goes into does not open it" if fallback is not None else "")
            )
    return got


class Opener:
    """Reads the plaintext of an encrypted bundle's records from ``f`` (positioned after the
    key header), one record in memory at a time; ``size`` is the plaintext's length. A record
    that does not open is CorruptFileError naming the file and the record."""

    def __init__(self, f: Any, start: bytes, bundle_key: bytes, salt: bytes, file_size: int, path: str) -> None:
        self._f = f
        self._path = path
        self._digest = blake3.blake3(start).digest()
        self._aead = AESGCM(_file_key(bundle_key, salt))
        body = file_size - len(start)
        self._records = body // (RECORD + TAG) + 1
        last = body % (RECORD + TAG)
        if last < TAG:
            raise CorruptFileError(path, "the file ends early (the bundle is damaged; nothing was imported)")
        self.size = body - TAG * self._records
        self._index = 0
        self._buffer = b""
        self._pos = 0

    async def _next(self) -> bool:
        if self._index >= self._records:
            return False
        final = self._index == self._records - 1
        want = self.size - RECORD * self._index + TAG if final else RECORD + TAG
        sealed = await self._f.read(want)
        if len(sealed) != want:
            raise CorruptFileError(self._path, "the file ends early (the bundle is damaged; nothing was imported)")
        try:
            self._buffer = self._aead.decrypt(_NONCE.pack(self._index), sealed, _ad(self._digest, self._index, final))
        except InvalidTag:
            raise CorruptFileError(
                self._path,
                f"record {self._index} of the encrypted bundle does not open: the file is damaged, cut short "
                "or changed (nothing was imported)",
            ) from None
        self._pos = 0
        self._index += 1
        return True

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of plaintext (fewer only at its end)."""
        parts = []
        while n > 0:
            if self._pos >= len(self._buffer) and not await self._next():
                break
            part = self._buffer[self._pos : self._pos + n]
            self._pos += len(part)
            n -= len(part)
            parts.append(part)
        return b"".join(parts)


__all__ = [
    "ENCRYPTED_VERSION",
    "ENV_BUNDLE_KEY",
    "ENV_BUNDLE_KEY_FILE",
    "ENV_BUNDLE_PASSWORD",
    "Opener",
    "Sealer",
    "bundle_secret_from_env",
    "open_bundle",
    "parse_key_header",
    "source_keys",
]
