"""Encrypted stores on the command line: where the key comes from, ``init --encrypt``, and
``castate key list|add|remove|change``.

The key that opens a store comes from ``--key-file PATH``, else the environment
(``CASTATE_PASSWORD``, ``CASTATE_KEY``, ``CASTATE_KEY_FILE``, read by the core), else, only
when the store turns out to be encrypted and stdin is a terminal, one passphrase prompt. A
new secret (``init --encrypt``, ``key add``, ``key change``) comes from a key file, an
environment variable, or a passphrase typed twice. Key slots are read and written on the
store's raw blob backend (``PackStore.raw``), never through the encrypting layer: they are
plaintext blobs by design (docs/format.md).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import sys
from collections.abc import Awaitable, Callable

from castate.backends.base import Backend
from castate.backends.blob import BlobBackend
from castate.cli.output import Output, local_time, plural
from castate.errors import KeyRequiredError, StoreError, StoreNotFoundError, UsageError
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, Passphrase, RawKey, Secret, secret_from_env
from castate.repository.crypto.slots import KeySlot, StoreKeys, add_slot, read_slots, remove_slot
from castate.repository.packs.store import PackStore
from castate.sessions.manager import StateManager

#: Where ``key add`` and ``key change`` take the new passphrase from when no terminal asks it.
ENV_NEW_PASSWORD = "CASTATE_NEW_PASSWORD"

EXIT_OK = 0


def tty() -> bool:
    """Whether a person can be asked: stdin is a terminal."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def key_file_secret(args: argparse.Namespace) -> RawKey | None:
    """The raw key ``--key-file PATH`` (given before the command, or after it) names, or None."""
    path = getattr(args, "key_file", None)
    return None if path is None else RawKey.from_file(path)


def key_required(location: str) -> KeyRequiredError:
    """The command line's own words for a missing key (the core's name ``key=``, a Python argument)."""
    return KeyRequiredError(
        f"store {location} is encrypted and no key was given: set {ENV_PASSWORD} (a passphrase), "
        f"{ENV_KEY} or {ENV_KEY_FILE} (a raw key), pass --key-file PATH, or run the command on a "
        "terminal to be asked for the passphrase"
    )


def ask_passphrase(location: str, ask: Callable[[str], str] = getpass.getpass) -> Passphrase:
    """One passphrase typed on the terminal (not echoed), to open an existing store."""
    text = ask(f"Passphrase for {location}: ")
    if not text:
        raise UsageError("no passphrase typed")
    return Passphrase(text)


def ask_new_passphrase(location: str, ask: Callable[[str], str] = getpass.getpass) -> Passphrase:
    """A new passphrase typed twice on the terminal; the two must match."""
    first = ask(f"New passphrase for {location}: ")
    if not first:
        raise UsageError("no passphrase typed")
    if ask("Type it again: ") != first:
        raise UsageError("the two passphrases differ; nothing was changed")
    return Passphrase(first)


def new_secret(args: argparse.Namespace, location: str, *, env: str, key_file: str | None) -> Secret:
    """A new secret for a key slot: the raw key in ``key_file``, else the passphrase in the
    environment variable ``env``, else one typed twice on the terminal."""
    if key_file is not None:
        return RawKey.from_file(key_file)
    if os.environ.get(env):
        return Passphrase(os.environ[env])
    if tty():
        return ask_new_passphrase(location)
    raise UsageError(f"no new key given: set {env}, pass --key-file PATH, or run the command on a terminal")


async def peek_slots(backend: Backend | BlobBackend) -> list[KeySlot] | None:
    """The key slots of the store (None when it does not exist; [] when it is not encrypted),
    read on the raw backend, opened and closed here. A format-1 or in-process store has none."""
    if not isinstance(backend, BlobBackend):
        return []
    try:
        await backend.open()
    except StoreNotFoundError:
        return None
    try:
        return await read_slots(backend)
    finally:
        await backend.close()


async def store_holds_data(backend: BlobBackend) -> bool:
    """Whether an (opened) raw backend holds any blob or ref."""
    return bool(await backend.list_blobs() or await backend.list_refs())


# -- opening a store ----------------------------------------------------------------------------


async def open_manager(
    path: str,
    args: argparse.Namespace,
    make: Callable[[str, bool], Backend | BlobBackend],
    *,
    create: bool,
    before_open: Callable[[StateManager], Awaitable[object]] | None = None,
) -> StateManager:
    """A StateManager on the store ``path``, open, with its key found as the module says.

    ``make(path, create)`` builds the backend. ``args.opener`` is set to the secret that
    opened an encrypted store (None for a plain one), which ``castate key`` needs."""
    explicit = key_file_secret(args)
    if explicit is not None:
        # --key-file is given to the store only once it is known to be encrypted: a key given
        # to an empty plain store would make it encrypted, and no read command may do that.
        slots = await peek_slots(make(path, False))
        if slots is None:
            raise StoreNotFoundError(
                f"no castate store at {path} (create an encrypted one with `castate init --encrypt`)"
            )
        if not slots:
            raise UsageError(f"--key-file: store {path} is not encrypted")
    sm = _manager(make(path, create), explicit)
    args.opener = explicit
    try:
        if before_open is not None:
            await before_open(sm)
        await sm.repository.open()
    except KeyRequiredError:
        await sm.close()
        if not tty():
            raise key_required(path) from None
        args.opener = ask_passphrase(path)
        sm = _manager(make(path, create), args.opener)
        try:
            await sm.repository.open()
        except BaseException:
            await sm.close()
            raise
    except BaseException:
        await sm.close()
        raise
    if args.opener is None and store_keys(sm) is not None:
        args.opener = secret_from_env()  # what the core opened it with
    return sm


def _manager(backend: Backend | BlobBackend, secret: Secret | None) -> StateManager:
    if secret is not None:
        if not isinstance(backend, BlobBackend):
            raise StoreError(f"store {backend.location} cannot be encrypted")
        backend.secret = secret
    return StateManager(backend)


def pack_store(sm: StateManager) -> PackStore | None:
    backend = sm.repository.backend
    return backend if isinstance(backend, PackStore) else None


def store_keys(sm: StateManager) -> StoreKeys | None:
    """The open store's keys (None: the store is not encrypted)."""
    store = pack_store(sm)
    return None if store is None else store.keys


async def encryption_facts(sm: StateManager) -> tuple[bool, int]:
    """(encrypted, number of key slots) of an open store."""
    store = pack_store(sm)
    if store is None or store.keys is None:
        return False, 0
    return True, len(await read_slots(store.raw))


# -- init --encrypt -----------------------------------------------------------------------------


async def init_encrypted(
    path: str, args: argparse.Namespace, make: Callable[[str, bool], Backend | BlobBackend], out: Output
) -> int:
    """``castate init --encrypt``: a new, empty store made encrypted under one key slot."""
    slots = await peek_slots(make(path, False))
    if slots:
        raise UsageError(
            f"store {path} is already encrypted ({plural(len(slots), 'key slot')}); add a passphrase with "
            "`castate key add`"
        )
    if slots is not None:  # it exists, plain: only an empty one may become encrypted
        backend = make(path, False)
        assert isinstance(backend, BlobBackend)
        await backend.open()
        try:
            full = await store_holds_data(backend)
        finally:
            await backend.close()
        if full:
            raise StoreError(
                f"store {path} holds data and is not encrypted; castate does not encrypt a store in place: "
                "create a new one with `castate init --encrypt` and move sessions over with `castate export` "
                "and `castate import`"
            )
    secret = key_file_secret(args) or secret_from_env()
    if secret is None:
        if not tty():
            raise UsageError(
                f"init --encrypt needs a key: set {ENV_PASSWORD} (a passphrase), {ENV_KEY} or {ENV_KEY_FILE}, "
                "pass --key-file PATH, or run it on a terminal to type a passphrase"
            )
        secret = ask_new_passphrase(path)
    backend = make(path, True)
    if not isinstance(backend, BlobBackend):
        raise StoreError(f"store {path} cannot be encrypted (an in-process store)")
    backend.secret = secret
    sm = StateManager(backend)
    try:
        await sm.repository.open(create=True)
        store = pack_store(sm)
        slot = store.keys.slot if store is not None and store.keys is not None else "?"
    finally:
        await sm.close()
    out.line(f"Created an encrypted castate store at {path} (key slot {slot}, {secret.kind}).")
    out.line("Keep the passphrase or key file safe: without it the data cannot be read by anyone.")
    return EXIT_OK


# -- castate key ... ----------------------------------------------------------------------------


def _encrypted(sm: StateManager, args: argparse.Namespace) -> tuple[PackStore, str]:
    store = pack_store(sm)
    if store is None or store.keys is None:
        raise StoreError(
            f"store {args.store_path} is not encrypted (create an encrypted one with `castate init --encrypt`)"
        )
    return store, store.keys.slot


async def cmd_key(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    actions = {"list": _key_list, "add": _key_add, "remove": _key_remove, "change": _key_change}
    return await actions[args.key_command](sm, args, out)


async def _key_list(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    store, opened = _encrypted(sm, args)
    slots = await read_slots(store.raw)
    if args.json:
        out.json(
            [
                {"slot": s.id, "kind": s.kind, "label": s.label, "created": s.created, "opened": s.id == opened}
                for s in slots
            ]
        )
        return EXIT_OK
    rows = [(("* " if s.id == opened else "  ") + s.id, s.kind, s.label or "-", _when(s.created)) for s in slots]
    out.table(["  SLOT", "KIND", "LABEL", "CREATED"], rows)
    out.line()
    out.line("* the slot whose key opened the store now")
    return EXIT_OK


def _when(created: str) -> str:
    try:
        stamp = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return created or "-"
    return local_time(stamp.timestamp())


def _opener(args: argparse.Namespace) -> Secret:
    if args.opener is None:  # cannot happen once an encrypted store is open; said plainly if it does
        raise StoreError("the key that opened the store is not known; give it with --key-file or the environment")
    opener: Secret = args.opener
    return opener


async def _key_add(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    store, _ = _encrypted(sm, args)
    secret = new_secret(args, args.store_path, env=ENV_NEW_PASSWORD, key_file=args.new_key_file)
    slot = await add_slot(store.raw, _opener(args), secret, label=args.label or "")
    if args.json:
        out.json({"slot": slot.id, "kind": slot.kind, "label": slot.label, "created": slot.created})
    else:
        out.line(f"Added key slot {slot.id} ({slot.kind}) to {args.store_path}.")
    return EXIT_OK


async def _key_remove(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    store, opened = _encrypted(sm, args)
    slots = await read_slots(store.raw)
    matches = [s.id for s in slots if args.slot and s.id.startswith(args.slot)]
    if len(matches) == 1 and matches[0] == opened and len(slots) > 1 and not args.force:
        raise UsageError(
            f"key slot {opened} is the one whose key opened the store now: open the store with another key "
            "to remove it, or pass --force (use `castate key change` to replace a passphrase)"
        )
    try:
        await remove_slot(store.raw, args.slot)  # refuses an unknown, ambiguous or last slot
    except UsageError as exc:
        raise UsageError(f"{exc} (`castate key list` shows the slots)") from None
    if args.json:
        out.json({"removed": matches[0]})
    else:
        out.line(
            f"Removed key slot {matches[0]} from {args.store_path}; its passphrase or key opens the store no more."
        )
    return EXIT_OK


async def _key_change(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    store, opened = _encrypted(sm, args)
    secret = new_secret(args, args.store_path, env=ENV_NEW_PASSWORD, key_file=args.new_key_file)
    old = next((s for s in await read_slots(store.raw) if s.id == opened), None)
    label = args.label if args.label is not None else (old.label if old is not None else "")
    slot = await add_slot(store.raw, _opener(args), secret, label=label)
    # The new slot is written before the old one goes: a crash in between leaves both keys
    # working. A removal that fails (another change took the old slot first) takes the new
    # slot away again, so a change reported as failed leaves no key behind.
    try:
        await remove_slot(store.raw, opened)
    except (UsageError, StoreError):
        await remove_slot(store.raw, slot.id)
        raise
    if args.json:
        out.json({"slot": slot.id, "kind": slot.kind, "label": slot.label, "removed": opened})
    else:
        out.line(f"Changed the key: added slot {slot.id} ({slot.kind}), removed slot {opened}, {args.store_path}.")
    return EXIT_OK


__all__ = [
    "ENV_NEW_PASSWORD",
    "ask_new_passphrase",
    "ask_passphrase",
    "cmd_key",
    "encryption_facts",
    "init_encrypted",
    "key_required",
    "new_secret",
    "open_manager",
    "tty",
]
