"""An encrypted store's key slots: one random master key, wrapped once per secret.

Each slot is a small plaintext blob ``keys/<16 hex digits>`` (docs/format.md §7) holding the
master key as a ``castate.keys.Secret`` wrapped it (a passphrase through scrypt, a raw key
through HKDF-SHA256, a KMS). Adding, changing or removing a passphrase writes or removes one
slot, never the data. Every key the store uses is derived from the master key with blake3's
key derivation mode (``StoreKeys``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import blake3

from castate.backends.base import RefUpdate
from castate.backends.blob import BlobBackend
from castate.codec.objects import Ids
from castate.errors import ConflictError, CorruptFileError, KeyRequiredError, StoreError, UsageError, WrongKeyError
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, MASTER_SIZE, Secret, WorkBudget, secret_from_env

KEYS_PREFIX = "keys/"
SLOT_VERSION = 1
CIPHER = "castate-enc-1"  # AES-256-GCM blobs, AES-SIV ref names and values, keyed blake3 ids
MAX_SLOT_BYTES = 4096  # a slot is a few hundred bytes; a larger blob is not read
MAX_SLOTS = 64
FIRST_SLOT = "0" * 16  # the first slot's id: one name, so racing initialisations write one
# The ref that says a store is encrypted (its value: ``marker_value`` of the store id). Every
# commit of a process that opened the store plain checks it is absent (PackStore), so such a
# process never writes plaintext beside sealed blobs; a store with it and no slot is damage.
# Stored as it is, not sealed: it is read before the keys are known.
MARKER_REF = "castate/encrypted"

_CONTEXT = "castate 2026-12-05 "  # blake3 derive_key contexts: globally unique, hard-coded


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
    ids: Ids = field(repr=False)  # keyed blake3 object ids
    blob_key: bytes = field(repr=False)  # AES-256-GCM, per blob name (sealed.py)
    name_key: bytes = field(repr=False)  # AES-SIV (64 bytes): ref names, reflog messages
    bundle_key: bytes = field(repr=False)  # the root of each exported bundle's key (bundle_crypto.py)

    @classmethod
    def derive(cls, master: bytes, store: str, slot: str) -> StoreKeys:
        def sub(what: str, n: int = 32) -> bytes:
            return blake3.blake3(master, derive_key_context=_CONTEXT + what).digest(length=n)

        return cls(
            store,
            slot,
            Ids(sub("object ids")),
            sub("blob encryption"),
            sub("ref names and values", 64),
            sub("bundle encryption"),
        )


def marker_value(store: str) -> bytes:
    """The 32-byte value of ``MARKER_REF`` for a store id."""
    return blake3.blake3(b"castate encrypted store " + store.encode("ascii")).digest()


async def read_slots(blobs: BlobBackend) -> list[KeySlot]:
    """The key slots of a store (none: the store is not encrypted).

    A slot that cannot be used (too large, not JSON, of another store) is skipped, so one bad
    slot never locks out the good ones; ``CorruptFileError`` only when the store is encrypted
    (its marker ref, or sealed blobs) and no slot is usable."""
    slots, bad, marker = await _slots(blobs)
    if slots:
        return slots
    if bad:
        name, why = next(iter(bad.items()))
        raise CorruptFileError(name, f"no usable key slot in store {blobs.location}: {why}")
    if marker is not None:
        raise CorruptFileError(
            KEYS_PREFIX,
            f"store {blobs.location} is encrypted (its marker ref says so) but has no key slots left: "
            "without one no key opens it; restore keys/ from a backup",
        )
    return []


async def skipped_slots(blobs: BlobBackend) -> dict[str, str]:
    """The key slots a reader skips (damaged, too large, of another store, past the first 64),
    each with why: fsck reports them, as their owners would otherwise only see WrongKeyError."""
    return (await _slots(blobs))[1]


async def _slots(blobs: BlobBackend) -> tuple[list[KeySlot], dict[str, str], bytes | None]:
    """The usable slots (the first ``MAX_SLOTS`` by name, of the marker's store id), why each
    other one was skipped, and the marker. The marker is read first: a slot is committed with
    its marker or before it, so a listing after a marker it saw holds that marker's slot."""
    marker = await blobs.get_ref(MARKER_REF)
    slots, bad = await _read_all(blobs)
    if marker is not None:
        ours = [s for s in slots if marker_value(s.store) == marker]
        bad.update({s.blob: "key slot of another store" for s in slots if s not in ours})
        return ours, bad, marker
    stores = {s.store for s in slots}
    if len(stores) > 1:  # no marker to tell which: the first slot's store (the initialiser's)
        first = slots[0].store
        bad.update({s.blob: "key slot of another store" for s in slots if s.store != first})
        slots = [s for s in slots if s.store == first]
    return slots, bad, marker


async def _read_all(blobs: BlobBackend) -> tuple[list[KeySlot], dict[str, str]]:
    """Every slot that parses (the first ``MAX_SLOTS`` by name), and why each other was skipped."""
    infos = sorted(await blobs.list_blobs(KEYS_PREFIX), key=lambda i: i.name)
    over = f"one of {len(infos)} key slots (castate reads {MAX_SLOTS})"
    bad = {i.name: over for i in infos[MAX_SLOTS:]}
    bad.update(
        {i.name: "key slot larger than any castate writes" for i in infos[:MAX_SLOTS] if i.size > MAX_SLOT_BYTES}
    )
    wanted = [i.name for i in infos[:MAX_SLOTS] if i.name not in bad]
    slots: list[KeySlot] = []
    for name, data in sorted((await blobs.get_blobs(wanted) if wanted else {}).items()):
        try:
            slots.append(parse_slot(name, data))
        except CorruptFileError as exc:
            bad[name] = exc.reason
    return slots, bad


def unlock(slots: list[KeySlot], secret: Secret, location: str) -> StoreKeys:
    """The store's keys, from the first slot ``secret`` opens; WrongKeyError if none."""
    slot, master = _open(slots, secret, location)
    return StoreKeys.derive(master, slot.store, slot.id)


def _open(slots: list[KeySlot], secret: Secret, location: str) -> tuple[KeySlot, bytes]:
    refused: list[CorruptFileError] = []
    budget = WorkBudget()
    for slot in slots:
        if not budget.take(secret, slot.fields):
            refused.append(CorruptFileError(slot.blob, "not tried: the slots before it used up an open's work"))
            continue
        try:
            master = secret.unwrap(slot.fields, slot.aad(), slot.blob)
        except WrongKeyError:
            continue
        except CorruptFileError as exc:  # hostile or damaged parameters: try the next slot
            refused.append(exc)
            continue
        if len(master) != MASTER_SIZE:
            refused.append(CorruptFileError(slot.blob, "key slot holds a master key of the wrong size"))
            continue
        return slot, master
    if refused and len(refused) == len(slots):
        raise refused[0]  # not one slot could even be tried: damage, named
    kinds = sorted({s.kind for s in slots})
    detail = f"; {len(refused)} refused as damaged ({refused[0].path}: {refused[0].reason})" if refused else ""
    raise WrongKeyError(
        f"the key given opens none of the {len(slots)} key slots of store {location} (kinds: {', '.join(kinds)}"
        f"{detail}): a wrong key, or, if it is the right one, its slot is damaged"
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
    """Make a new, empty store encrypted: a fresh master key, its first slot and the marker
    ref, in one commit (a process that opened the store plain checks the marker in its saves,
    so none lands between the two).

    The first slot has a fixed name and the marker moves only from absent, so when several
    processes initialise one store at once exactly one master key is written: the others open
    the winner's slot with their secret (the same passphrase works on), or get ConflictError
    when it does not open it. If a plain writer's data landed while the store was checked
    empty, the encryption is undone and StoreError raised: the store stays plain, with it."""
    master = os.urandom(MASTER_SIZE)
    store = os.urandom(16).hex()
    slot = await asyncio.to_thread(_new_slot, secret, master, store, label or "first key", FIRST_SLOT)
    mine = marker_value(store)
    try:
        written = await blobs.commit(
            [(slot.blob, slot.encode())], [RefUpdate(MARKER_REF, mine, None)], message="castate: store encrypted"
        )
    except ConflictError:
        return await _open_winner(blobs, secret)  # another process's marker came first
    if not written:
        # The first slot's name was taken by an initialisation that stopped before its marker:
        # point the marker at that slot's store instead, and open it.
        for theirs in (await _read_all(blobs))[0]:
            if theirs.id == FIRST_SLOT:
                await blobs.commit((), [RefUpdate(MARKER_REF, marker_value(theirs.store), mine)])
        return await _open_winner(blobs, secret)
    held = [i for i in await blobs.list_blobs() if not i.name.startswith(KEYS_PREFIX)]
    refs = [n for n in await blobs.list_refs() if n != MARKER_REF]
    if held or refs:
        await blobs.commit((), [RefUpdate(MARKER_REF, None, mine)], message="castate: encryption undone")
        await blobs.delete_blobs([slot.blob])
        raise StoreError(
            f"store {blobs.location} received data from a plain writer while it was made encrypted; "
            "it stays plain (castate does not encrypt a store in place)"
        )
    return StoreKeys.derive(master, store, slot.id)


async def _open_winner(blobs: BlobBackend, secret: Secret) -> StoreKeys:
    slots = await read_slots(blobs)
    try:
        return await asyncio.to_thread(unlock, slots, secret, blobs.location)
    except WrongKeyError:
        raise ConflictError(
            f"store {blobs.location} was made encrypted by another process at the same time, with another key",
            None,
        ) from None


async def ensure_marker(blobs: BlobBackend, keys: StoreKeys) -> None:
    """Create the marker ref of an encrypted store if it is missing (a new store, or one whose
    initialiser stopped between its slot and its marker)."""
    want = marker_value(keys.store)
    if await blobs.get_ref(MARKER_REF) == want:
        return
    try:
        await blobs.commit((), [RefUpdate(MARKER_REF, want, None)], message="castate: store encrypted")
    except ConflictError:
        if await blobs.get_ref(MARKER_REF) != want:
            raise CorruptFileError(f"ref {MARKER_REF}", "names another store than the key slots") from None


async def open_keys(blobs: BlobBackend, secret: Secret | None) -> StoreKeys | None:
    """The keys of an encrypted store, or None for a plain one.

    ``secret``, else the environment's (``castate.keys.secret_from_env``), opens a slot. A new,
    empty store given either becomes encrypted. A plain store that holds anything is refused
    when ``secret`` was given (castate does not encrypt a store in place), and opened plain when
    the key only comes from the environment (it may be meant for other stores)."""
    chosen = secret if secret is not None else secret_from_env()
    for _ in range(3):
        slots = await read_slots(blobs)
        if slots:
            keys = await asyncio.to_thread(unlock, slots, require_secret(chosen, blobs.location), blobs.location)
            await ensure_marker(blobs, keys)
            return keys
        if chosen is None:
            return None
        held, refs = await blobs.list_blobs(), await blobs.list_refs()
        if any(i.name.startswith(KEYS_PREFIX) for i in held) or MARKER_REF in refs:
            continue  # another process is making it encrypted right now
        if held or refs:
            if secret is None:
                return None
            raise StoreError(
                f"store {blobs.location} is not encrypted, and castate does not encrypt a store in place: "
                "export its sessions and import them into a new encrypted store (docs/security.md)"
            )
        try:
            return await create_keys(blobs, secret if secret is not None else chosen)
        except ConflictError:
            continue  # another process made it encrypted with another key: its slots say so
    raise ConflictError(f"store {blobs.location} kept changing while its keys were read")


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
    """Remove one slot (a skipped one, damaged or foreign, too); the last usable one never goes
    (the data would be lost with it). Removals
    take the backend's exclusive gc lock, so two of them in two processes never both see the
    other's slot as the one that stays, and a removal killed midway leaves one."""
    async with blobs.gc_exclusive():
        slots = await read_slots(blobs)
        skipped = [name[len(KEYS_PREFIX) :] for name in await skipped_slots(blobs)]
        ids = [s.id for s in slots] + skipped
        matches = [s for s in ids if s.startswith(slot_id)] if slot_id else []
        if len(matches) != 1:
            why = "is ambiguous" if matches else f"is not in store {blobs.location}"
            raise UsageError(f"key slot {slot_id!r} {why}")
        if matches[0] in skipped:  # a damaged or foreign slot opens nothing: it goes freely
            await blobs.delete_blobs([KEYS_PREFIX + matches[0]])
            return
        if len(slots) == 1:
            raise UsageError("that is the store's only key slot: add another first (without one, the data is lost)")
        doomed = KEYS_PREFIX + matches[0]
        kept = await blobs.get_blobs([doomed])
        await blobs.delete_blobs([doomed])
        # A backend whose gc lock excludes nothing (memory, one process): two removals of the
        # last two slots both saw another slot; the one that finds none left puts its own back.
        if doomed in kept and not await blobs.list_blobs(KEYS_PREFIX):
            await blobs.put_blobs([(doomed, kept[doomed])])
            raise UsageError(
                f"key slot {matches[0]} was kept: another removal took the store's other key slots at the same time"
            )


__all__ = [
    "FIRST_SLOT",
    "KEYS_PREFIX",
    "MARKER_REF",
    "KeySlot",
    "StoreKeys",
    "add_slot",
    "create_keys",
    "ensure_marker",
    "marker_value",
    "open_keys",
    "read_slots",
    "remove_slot",
    "require_secret",
    "skipped_slots",
    "unlock",
]
