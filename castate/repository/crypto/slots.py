"""An encrypted store's key slots: one random master key, wrapped once per secret.

Each slot is a small plaintext blob ``keys/<16 hex digits>`` (docs/format.md §7) holding the
master key as a ``castate.keys.Secret`` wrapped it (a passphrase through scrypt, a raw key
through HKDF-SHA256, a KMS). Adding, changing or removing a passphrase writes or removes one
slot, never the data. Every key the store uses is derived from the master key with blake3's
key derivation mode (``StoreKeys``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import blake3

from castate.backends.blob import BlobBackend
from castate.codec.objects import Ids
from castate.errors import ConflictError, CorruptFileError, KeyRequiredError, StoreError, UsageError, WrongKeyError
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, MASTER_SIZE, Secret, secret_from_env

KEYS_PREFIX = "keys/"
SLOT_VERSION = 1
CIPHER = "castate-enc-1"  # AES-256-GCM blobs, AES-SIV ref names and values, keyed blake3 ids
MAX_SLOT_BYTES = 4096  # a slot is a few hundred bytes; a larger blob is not read
MAX_SLOTS = 64
FIRST_SLOT = "0" * 16  # the first slot's id: one name, so racing initialisations write one

SEALED_MAGIC = b"CSB1"  # what every sealed blob starts with (sealed.py)

_CONTEXT = "castate 2026-12-05 "  # blake3 derive_key contexts: globally unique, hard-coded


def _unb64(text: object, what: str, where: str) -> bytes:
    if not isinstance(text, str):
        raise CorruptFileError(where, f"{what} is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CorruptFileError(where, f"{what} is not base64") from None


@dataclass(frozen=True, slots=True)
class KeySlot:
    """One key slot as stored: what ``castate key list`` shows, and the fields a secret reads."""

    id: str  # 16 hex digits: the blob is keys/<id>
    store: str  # the store's id (32 hex digits), the same in every slot of one store
    kind: str
    label: str
    created: str  # ISO 8601 UTC
    fields: dict[str, Any]

    @property
    def blob(self) -> str:
        return KEYS_PREFIX + self.id

    def aad(self) -> bytes:
        return f"castate key slot {SLOT_VERSION} {self.store} {self.id}".encode("ascii")

    def encode(self) -> bytes:
        body = {
            "castate_key_slot": SLOT_VERSION,
            "cipher": CIPHER,
            "id": self.id,
            "store": self.store,
            "kind": self.kind,
            "label": self.label,
            "created": self.created,
            **self.fields,
        }
        return json.dumps(body, sort_keys=True, indent=1).encode("utf-8")


def parse_slot(name: str, data: bytes) -> KeySlot:
    """A slot from its blob; CorruptFileError naming it when it does not parse."""
    where = name
    if len(data) > MAX_SLOT_BYTES:
        raise CorruptFileError(where, f"key slot of {len(data)} bytes")
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise CorruptFileError(where, f"key slot is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptFileError(where, "key slot is not a JSON object")
    version = body.get("castate_key_slot")
    if version != SLOT_VERSION or body.get("cipher") != CIPHER:
        cipher = body.get("cipher")
        raise CorruptFileError(where, f"key slot version {version!r}, cipher {cipher!r}: not one this castate reads")
    sid, store = body.get("id"), body.get("store")
    if not (isinstance(sid, str) and _is_hex(sid, 16) and name == KEYS_PREFIX + sid):
        raise CorruptFileError(where, "key slot id does not match its name")
    if not (isinstance(store, str) and _is_hex(store, 32)):
        raise CorruptFileError(where, "key slot has no store id")
    meta = {k: body.pop(k, "") for k in ("castate_key_slot", "cipher", "id", "store", "kind", "label", "created")}
    return KeySlot(sid, store, str(meta["kind"]), str(meta["label"]), str(meta["created"]), body)


def _is_hex(text: str, n: int) -> bool:
    return len(text) == n and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The keys one encrypted store uses, all derived from its master key."""

    store: str
    slot: str  # the slot that opened it
    ids: Ids  # keyed blake3 object ids
    blob_key: bytes  # AES-256-GCM, per blob name (sealed.py)
    name_key: bytes  # AES-SIV (64 bytes): ref names, values, reflog messages

    @classmethod
    def derive(cls, master: bytes, store: str, slot: str) -> StoreKeys:
        def sub(what: str, n: int = 32) -> bytes:
            return blake3.blake3(master, derive_key_context=_CONTEXT + what).digest(length=n)

        return cls(store, slot, Ids(sub("object ids")), sub("blob encryption"), sub("ref names and values", 64))


async def read_slots(blobs: BlobBackend) -> list[KeySlot]:
    """Every key slot of a store (none: the store is not encrypted)."""
    infos = await blobs.list_blobs(KEYS_PREFIX)
    if not infos:
        await _check_not_sealed(blobs)
        return []
    if len(infos) > MAX_SLOTS:
        raise CorruptFileError(KEYS_PREFIX, f"{len(infos)} key slots (castate reads at most {MAX_SLOTS})")
    big = [i.name for i in infos if i.size > MAX_SLOT_BYTES]
    if big:
        raise CorruptFileError(big[0], "key slot larger than any castate writes")
    got = await blobs.get_blobs([i.name for i in infos])
    slots = [parse_slot(name, data) for name, data in sorted(got.items())]
    stores = {s.store for s in slots}
    if len(stores) > 1:
        raise CorruptFileError(KEYS_PREFIX, f"key slots of {len(stores)} different stores")
    return slots


async def _check_not_sealed(blobs: BlobBackend) -> None:
    """A store without key slots whose blobs are sealed lost its slots (deleted by hand, or
    not copied with the rest): say so, instead of reading it as a plain store whose every
    pack is damaged and whose session names are ciphertext. The first bytes of its smallest
    index segment tell (read whole: opening reads the segments anyway, never pack heads by
    range), or in a store without any, of its smallest pack (whose head opening reads)."""
    head: bytes | None = None
    segments = await blobs.list_blobs("index/")
    if segments:
        name = min(segments, key=lambda i: i.size).name
        head = (await blobs.get_blobs([name])).get(name, b"")[: len(SEALED_MAGIC)]
    else:
        packs = await blobs.list_blobs("packs/")
        if packs:
            name = min(packs, key=lambda i: i.size).name
            (head,) = await blobs.get_ranges([(name, 0, len(SEALED_MAGIC))])
    if head == SEALED_MAGIC:
        raise CorruptFileError(
            KEYS_PREFIX,
            f"store {blobs.location} is encrypted ({name} is sealed) but has no key slots: they were deleted "
            "or not copied, and without one no key opens the store; restore keys/ from a backup",
        )


def unlock(slots: list[KeySlot], secret: Secret, location: str) -> StoreKeys:
    """The store's keys, from the first slot ``secret`` opens; WrongKeyError if none."""
    slot, master = _open(slots, secret, location)
    return StoreKeys.derive(master, slot.store, slot.id)


def _open(slots: list[KeySlot], secret: Secret, location: str) -> tuple[KeySlot, bytes]:
    for slot in slots:
        try:
            master = secret.unwrap(slot.fields, slot.aad(), slot.blob)
        except WrongKeyError:
            continue
        if len(master) != MASTER_SIZE:
            raise CorruptFileError(slot.blob, "key slot holds a master key of the wrong size")
        return slot, master
    kinds = sorted({s.kind for s in slots})
    raise WrongKeyError(
        f"the key given opens none of the {len(slots)} key slots of store {location} (kinds: {', '.join(kinds)}): "
        "a wrong key, or, if it is the right one, its slot is damaged"
    )


def require_secret(secret: Secret | None, location: str) -> Secret:
    found = secret if secret is not None else secret_from_env()
    if found is None:
        raise KeyRequiredError(
            f"store {location} is encrypted: give its key (key=castate.Passphrase(...) or castate.RawKey(...), "
            f"or set {ENV_PASSWORD}, {ENV_KEY} or {ENV_KEY_FILE})"
        )
    return found


def _new_slot(secret: Secret, master: bytes, store: str, label: str, sid: str = "") -> KeySlot:
    sid = sid or os.urandom(8).hex()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    draft = KeySlot(sid, store, secret.kind, label, created, {})
    return KeySlot(sid, store, secret.kind, label, created, secret.wrap(master, draft.aad()))


async def create_keys(blobs: BlobBackend, secret: Secret, *, label: str = "") -> StoreKeys:
    """Make a new store encrypted: a fresh master key and its first slot.

    The first slot has a fixed name and blobs are create-only, so when several processes
    initialise one store at once exactly one slot, and one master key, is written: the others
    open the winner's slot with their secret (the same passphrase works on), or get
    ConflictError when their secret does not open it."""
    master = os.urandom(MASTER_SIZE)
    store = os.urandom(16).hex()
    slot = await asyncio.to_thread(_new_slot, secret, master, store, label or "first key", FIRST_SLOT)
    if await blobs.put_blobs([(slot.blob, slot.encode())]):
        return StoreKeys.derive(master, store, slot.id)
    # Another process was first (or this one was, and its reply got lost): open what is there.
    slots = await read_slots(blobs)
    try:
        return await asyncio.to_thread(unlock, slots, secret, blobs.location)
    except WrongKeyError:
        raise ConflictError(
            f"store {blobs.location} was made encrypted by another process at the same time, with another key",
            None,
        ) from None


async def add_slot(blobs: BlobBackend, opener: Secret, secret: Secret, *, label: str = "") -> KeySlot:
    """A new slot that ``secret`` opens, for the master key that ``opener`` opens."""
    slots = await read_slots(blobs)
    if not slots:
        raise StoreError(f"store {blobs.location} is not encrypted")
    slot, master = await asyncio.to_thread(_open, slots, opener, blobs.location)
    if len(slots) >= MAX_SLOTS:
        raise UsageError(f"store {blobs.location} has {len(slots)} key slots already")
    new = await asyncio.to_thread(_new_slot, secret, master, slot.store, label)
    await blobs.put_blobs([(new.blob, new.encode())])
    return new


async def remove_slot(blobs: BlobBackend, slot_id: str) -> None:
    """Remove one slot; the last one never goes (the data would be lost with it)."""
    slots = await read_slots(blobs)
    ids = [s.id for s in slots]
    matches = [s for s in ids if s.startswith(slot_id)] if slot_id else []
    if len(matches) != 1:
        why = "is ambiguous" if matches else f"is not in store {blobs.location}"
        raise UsageError(f"key slot {slot_id!r} {why}")
    if len(slots) == 1:
        raise UsageError("that is the store's only key slot: add another first (without one, the data is lost)")
    doomed = KEYS_PREFIX + matches[0]
    kept = await blobs.get_blobs([doomed])
    await blobs.delete_blobs([doomed])
    # Two processes removing the last two slots at once both saw another slot: the one that
    # finds none left after its delete puts its slot back (blobs are written again after a
    # delete), so one slot always survives; a reader in between is told the slots are gone.
    if doomed in kept and not await blobs.list_blobs(KEYS_PREFIX):
        await blobs.put_blobs([(doomed, kept[doomed])])
        raise UsageError(
            f"key slot {matches[0]} was kept: another process removed the store's other key slots at the same time"
        )


__all__ = [
    "FIRST_SLOT",
    "KEYS_PREFIX",
    "SEALED_MAGIC",
    "KeySlot",
    "StoreKeys",
    "add_slot",
    "create_keys",
    "read_slots",
    "remove_slot",
    "require_secret",
    "unlock",
]
