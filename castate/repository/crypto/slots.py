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

from castate.backends.base import RefUpdate
from castate.backends.blob import BlobBackend
from castate.codec.objects import Ids
from castate.errors import ConflictError, CorruptFileError, KeyRequiredError, StoreError, UsageError, WrongKeyError
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, MASTER_SIZE, Secret, secret_from_env

KEYS_PREFIX = "keys/"
# The ref that says a store is encrypted, and with which master key: its value is the store
# id of every valid slot. Made by compare-and-swap from absent, so of two processes making one
# store encrypted at once exactly one wins. Stored as it is (not sealed): it is read first.
MARKER_REF = "castate/encrypted"
SLOT_VERSION = 1
CIPHER = "castate-enc-1"  # AES-256-GCM blobs, AES-SIV ref names and values, keyed blake3 ids
MAX_SLOT_BYTES = 4096  # a slot is a few hundred bytes; a larger blob is not read
MAX_SLOTS = 64

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
    store: str  # the store's id (64 hex digits), the same in every slot of one store
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
    if not (isinstance(store, str) and _is_hex(store, 64)):
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
    """Every key slot of a store (none: the store is not encrypted). Slots of another store id
    than the marker's are the leftovers of an initialisation that lost a race, and are skipped;
    a marker without any slot of its id is damage (the store cannot be opened, nor written as
    a plain one)."""
    marker = await blobs.get_ref(MARKER_REF)
    infos = await blobs.list_blobs(KEYS_PREFIX)
    if not infos:
        if marker is not None:
            raise CorruptFileError(KEYS_PREFIX, f"store {blobs.location} is encrypted but has no key slot left")
        return []
    if len(infos) > MAX_SLOTS:
        raise CorruptFileError(KEYS_PREFIX, f"{len(infos)} key slots (castate reads at most {MAX_SLOTS})")
    big = [i.name for i in infos if i.size > MAX_SLOT_BYTES]
    if big:
        raise CorruptFileError(big[0], "key slot larger than any castate writes")
    got = await blobs.get_blobs([i.name for i in infos])
    slots = [parse_slot(name, data) for name, data in sorted(got.items())]
    if marker is not None:
        slots = [s for s in slots if s.store == marker.hex()]
        if not slots:
            raise CorruptFileError(KEYS_PREFIX, f"store {blobs.location} is encrypted but has no key slot of its id")
        return slots
    stores = {s.store for s in slots}
    if len(stores) > 1:
        raise CorruptFileError(KEYS_PREFIX, f"key slots of {len(stores)} different stores, and no marker ref")
    return slots  # an initialisation that stopped before its marker: finish_init completes it


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
        f"the key given opens none of the {len(slots)} key slots of store {location} (kinds: {', '.join(kinds)})"
    )


def require_secret(secret: Secret | None, location: str) -> Secret:
    found = secret if secret is not None else secret_from_env()
    if found is None:
        raise KeyRequiredError(
            f"store {location} is encrypted: give its key (key=castate.Passphrase(...) or castate.RawKey(...), "
            f"or set {ENV_PASSWORD}, {ENV_KEY} or {ENV_KEY_FILE})"
        )
    return found


async def open_keys(blobs: BlobBackend, secret: Secret | None) -> StoreKeys | None:
    """The keys of an encrypted store (``secret``, else the environment's, opens a slot), or
    None for a plain store. A new, empty store given ``secret`` becomes encrypted; a plain store
    holding anything, given one, is refused (castate does not encrypt a store in place)."""
    for _ in range(3):
        slots = await read_slots(blobs)
        if slots:
            keys = await asyncio.to_thread(unlock, slots, require_secret(secret, blobs.location), blobs.location)
            if await blobs.get_ref(MARKER_REF) is None:  # an initialisation that stopped before its marker
                try:
                    await blobs.commit((), [RefUpdate(MARKER_REF, bytes.fromhex(keys.store), None)])
                except ConflictError:
                    continue  # another initialiser's marker won: read the slots of its id
            return keys
        if secret is None:
            return None
        held, refs = await blobs.list_blobs(), await blobs.list_refs()
        if any(i.name.startswith(KEYS_PREFIX) for i in held) or MARKER_REF in refs:
            continue  # another process is making it encrypted right now
        if held or refs:
            raise StoreError(
                f"store {blobs.location} is not encrypted, and castate does not encrypt a store in place: "
                "export its sessions and import them into a new encrypted store (docs/security.md)"
            )
        try:
            return await create_keys(blobs, secret)
        except ConflictError:
            continue  # another process made it encrypted at the same time: open its slots
    raise ConflictError(f"store {blobs.location} kept changing while its keys were read")


def _new_slot(secret: Secret, master: bytes, store: str, label: str) -> KeySlot:
    sid = os.urandom(8).hex()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    draft = KeySlot(sid, store, secret.kind, label, created, {})
    return KeySlot(sid, store, secret.kind, label, created, secret.wrap(master, draft.aad()))


async def create_keys(blobs: BlobBackend, secret: Secret, *, label: str = "") -> StoreKeys:
    """Make a new store encrypted: a fresh master key, its first slot, then the marker ref by
    compare-and-swap from absent. When two processes initialise one store at once, one marker
    wins; the loser removes its slot and gets ConflictError (its caller reads the slots again)."""
    master = os.urandom(MASTER_SIZE)
    store = os.urandom(32)
    slot = await asyncio.to_thread(_new_slot, secret, master, store.hex(), label or "first key")
    await blobs.put_blobs([(slot.blob, slot.encode())])
    try:
        await blobs.commit((), [RefUpdate(MARKER_REF, store, None)], message="castate: store encrypted")
    except ConflictError:
        # Another process may have read this slot before the marker existed and set the marker
        # to its store id itself (open_keys finishing an interrupted initialisation): then the
        # slot is the store's, and stays.
        if await blobs.get_ref(MARKER_REF) != store:
            await blobs.delete_blobs([slot.blob])
            why = "was made encrypted by another process at the same time"
            raise ConflictError(f"store {blobs.location} {why}") from None
    return StoreKeys.derive(master, store.hex(), slot.id)


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
    await blobs.delete_blobs([KEYS_PREFIX + matches[0]])


__all__ = [
    "KEYS_PREFIX",
    "KeySlot",
    "StoreKeys",
    "add_slot",
    "create_keys",
    "open_keys",
    "read_slots",
    "remove_slot",
    "require_secret",
    "unlock",
]
