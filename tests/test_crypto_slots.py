"""castate.repository.crypto.slots: an encrypted store's key slots, opened and changed, and
slots an attacker or a damaged disk left: never obeyed, always a clear error."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import pytest

import castate
from castate.backends.base import RefUpdate
from castate.backends.blob import BlobInfo
from castate.backends.local import LocalBackend
from castate.backends.memory import MemoryBackend
from castate.errors import (
    ConflictError,
    CorruptFileError,
    KeyRequiredError,
    StoreError,
    UsageError,
    WrongKeyError,
)
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, Passphrase, RawKey
from castate.repository.crypto.slots import (
    FIRST_SLOT,
    KEYS_PREFIX,
    MARKER_REF,
    MAX_SLOT_BYTES,
    MAX_SLOTS,
    KeySlot,
    StoreKeys,
    add_slot,
    create_keys,
    marker_value,
    open_keys,
    read_slots,
    remove_slot,
    unlock,
)

PW = Passphrase("first passphrase", n=1024)
KEY = RawKey(b"0123456789abcdef0123456789abcdef")


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_PASSWORD, ENV_KEY, ENV_KEY_FILE):
        monkeypatch.delenv(name, raising=False)


def same_keys(a: StoreKeys, b: StoreKeys) -> bool:
    return (a.store, a.blob_key, a.name_key, a.ids.key) == (
        b.store,
        b.blob_key,
        b.name_key,
        b.ids.key,
    )


async def test_create_and_unlock() -> None:
    blobs = MemoryBackend()
    keys = await create_keys(blobs, PW, label="laptop")
    (slot,) = await read_slots(blobs)
    assert (slot.id, slot.kind, slot.label, slot.store) == (FIRST_SLOT, "passphrase", "laptop", keys.store)
    assert same_keys(unlock([slot], Passphrase("first passphrase", n=1024), "memory"), keys)
    with pytest.raises(WrongKeyError, match="opens none of the 1 key slots"):
        unlock([slot], Passphrase("other", n=1024), "memory")
    with pytest.raises(WrongKeyError):
        unlock([slot], KEY, "memory")
    # derived keys differ from each other and from another store's
    assert len({keys.blob_key, keys.name_key[:32], keys.name_key[32:]}) == 3
    other = await create_keys(MemoryBackend(), PW)
    assert not same_keys(other, keys)
    # the slot is plaintext JSON holding no key material in the clear
    data = (await blobs.get_blobs([slot.blob]))[slot.blob]
    body = json.loads(data)
    assert body["castate_key_slot"] == 1
    assert body["kdf"]["name"] == "scrypt"


async def test_add_change_and_remove_slots() -> None:
    blobs = MemoryBackend()
    keys = await create_keys(blobs, PW)
    new = await add_slot(blobs, PW, KEY, label="ci")
    assert new.kind == "key"
    slots = await read_slots(blobs)
    assert sorted(s.id for s in slots) == sorted([FIRST_SLOT, new.id])
    assert same_keys(unlock(slots, KEY, "m"), keys)  # both open the one master key
    assert same_keys(unlock(slots, PW, "m"), keys)
    with pytest.raises(WrongKeyError):  # adding needs a secret that opens the store
        await add_slot(blobs, Passphrase("guess", n=1024), Passphrase("mine", n=1024))
    # change the passphrase: add the new, remove the old
    changed = Passphrase("second passphrase", n=1024)
    await add_slot(blobs, KEY, changed)
    await remove_slot(blobs, FIRST_SLOT[:6])  # a unique prefix names a slot
    slots = await read_slots(blobs)
    assert FIRST_SLOT not in {s.id for s in slots}
    with pytest.raises(WrongKeyError):
        unlock(slots, PW, "m")
    assert same_keys(unlock(slots, changed, "m"), keys)
    with pytest.raises(UsageError, match="not in store"):
        await remove_slot(blobs, "ffffffffffffffff")
    with pytest.raises(UsageError, match="not in store"):
        await remove_slot(blobs, "")
    await remove_slot(blobs, new.id)
    (last,) = await read_slots(blobs)
    with pytest.raises(UsageError, match="only key slot"):
        await remove_slot(blobs, last.id)
    assert len(await read_slots(blobs)) == 1


async def test_ambiguous_slot_prefix() -> None:
    blobs = MemoryBackend()
    await create_keys(blobs, PW)
    (first,) = await read_slots(blobs)
    twin = KeySlot("0000000000000001", first.store, first.kind, "", "", first.fields)
    await blobs.put_blobs([(twin.blob, twin.encode())])
    with pytest.raises(UsageError, match="ambiguous"):
        await remove_slot(blobs, "000")
    await remove_slot(blobs, "0000000000000001")
    assert [s.id for s in await read_slots(blobs)] == [FIRST_SLOT]


async def test_add_slot_to_a_plain_store_and_too_many_slots() -> None:
    with pytest.raises(StoreError, match="not encrypted"):
        await add_slot(MemoryBackend(), PW, KEY)
    blobs = MemoryBackend()
    await create_keys(blobs, KEY)
    for _ in range(MAX_SLOTS - 1):
        await add_slot(blobs, KEY, KEY)
    with pytest.raises(UsageError, match="key slots already"):
        await add_slot(blobs, KEY, KEY)
    assert len(await read_slots(blobs)) == MAX_SLOTS


# -- through the public API ---------------------------------------------------------------------


async def test_no_key_and_wrong_key_through_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s"
    async with castate.StateManager(castate.open(path, key=PW)) as sm:
        await sm.save_session("s", {"v": 1})
    with pytest.raises(KeyRequiredError, match="is encrypted: give its key"):
        async with castate.StateManager(castate.open(path)) as sm:
            await sm.load_session("s")
    with pytest.raises(WrongKeyError, match="opens none"):
        async with castate.StateManager(castate.open(path, key=KEY)) as sm:
            await sm.load_session("s")
    monkeypatch.setenv(ENV_PASSWORD, "first passphrase")
    async with castate.StateManager(castate.open(path)) as sm:  # the environment's key
        assert await sm.load_session("s") == {"v": 1}
    # a new store made while the environment holds a key is encrypted with it
    fresh = tmp_path / "fresh"
    async with castate.StateManager(castate.open(fresh)) as sm:
        await sm.save_session("s", {"v": 1})
    monkeypatch.delenv(ENV_PASSWORD)
    with pytest.raises(KeyRequiredError):
        async with castate.StateManager(castate.open(fresh)) as sm:
            await sm.load_session("s")
    # and a plain store given a key is refused, not encrypted in place
    plain = tmp_path / "plain"
    async with castate.StateManager(castate.open(plain, key=None)) as sm:
        await sm.save_session("s", {"v": 1})
    with pytest.raises(StoreError, match="not encrypted"):
        async with castate.StateManager(castate.open(plain, key=PW)) as sm:
            await sm.load_session("s")
    # while a key in the environment leaves an existing plain store plain (it may be another store's)
    monkeypatch.setenv(ENV_PASSWORD, "first passphrase")
    async with castate.StateManager(castate.open(plain)) as sm:
        assert await sm.load_session("s") == {"v": 1}


# -- hostile and damaged slots -------------------------------------------------------------------


def slot_body(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "castate_key_slot": 1,
        "cipher": "castate-enc-1",
        "id": "1111111111111111",
        "store": "a" * 32,
        "kind": "passphrase",
        "label": "",
        "created": "",
    }
    body.update(fields)
    return body


async def hostile(blobs: MemoryBackend, data: bytes, name: str = "keys/1111111111111111") -> None:
    await blobs.put_blobs([(name, data)])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (json.dumps(slot_body(castate_key_slot=2)).encode(), "version 2"),
        (json.dumps(slot_body(cipher="rot13")).encode(), "rot13"),
        (json.dumps(slot_body(id="2222222222222222")).encode(), "does not match its name"),
        (json.dumps(slot_body(store="nope")).encode(), "no store id"),
        (b" " * (MAX_SLOT_BYTES + 1), "larger than any castate writes"),
    ],
)
async def test_a_damaged_slot_is_corrupt_file_error_naming_it(data: bytes, match: str) -> None:
    blobs = MemoryBackend()
    await hostile(blobs, data)
    with pytest.raises(CorruptFileError, match=match) as caught:
        await read_slots(blobs)
    assert caught.value.path == "keys/1111111111111111"


async def test_a_slot_asking_for_huge_scrypt_costs_is_refused_before_any_work() -> None:
    blobs = MemoryBackend()
    keys = await create_keys(blobs, PW)
    (slot,) = await read_slots(blobs)
    body = json.loads((await blobs.get_blobs([slot.blob]))[slot.blob])
    for n, r in [(1 << 30, 8), (1 << 20, 16), (1 << 21, 1)]:
        body["kdf"] = {**body["kdf"], "n": n, "r": r}
        evil = KeySlot(
            slot.id,
            slot.store,
            "passphrase",
            "",
            "",
            {k: v for k, v in body.items() if k in ("kdf", "nonce", "wrapped")},
        )
        with pytest.raises(CorruptFileError, match="outside what castate reads") as caught:
            unlock([evil], PW, "m")
        assert caught.value.path == slot.blob
    assert keys.store == slot.store


async def test_too_many_slots_and_slots_of_two_stores() -> None:
    """Neither a flood of slots nor a slot of another store locks out the store's own slots:
    the first ``MAX_SLOTS`` by name are read (the first slot's name sorts first), a slot of
    another store id than the marker's is skipped; only when no slot is usable is it damage."""
    many = MemoryBackend()
    await many.put_blobs([(f"keys/{i:016x}", b"{}") for i in range(1, MAX_SLOTS + 2)])
    with pytest.raises(CorruptFileError, match="no usable key slot"):
        await read_slots(many)
    await create_keys(many, PW)
    assert [s.id for s in await read_slots(many)] == [FIRST_SLOT]
    assert (await open_keys(many, PW)) is not None
    two = MemoryBackend()
    await create_keys(two, PW)
    other = MemoryBackend()
    await create_keys(other, PW)
    (foreign,) = await read_slots(other)
    await two.put_blobs(
        [
            (
                "keys/2222222222222222",
                KeySlot("2222222222222222", foreign.store, foreign.kind, "", "", foreign.fields).encode(),
            )
        ]
    )
    assert [s.id for s in await read_slots(two)] == [FIRST_SLOT]  # the foreign one is skipped


async def test_a_slot_copied_from_another_store_does_not_open() -> None:
    """A slot is bound (AEAD associated data) to its store id and slot id: an attacker who
    renames a slot of a store whose passphrase they know into a store they want cannot use it."""
    mine, theirs = MemoryBackend(), MemoryBackend()
    await create_keys(mine, PW)
    await create_keys(theirs, KEY)
    (slot,) = await read_slots(mine)
    moved = KeySlot("3333333333333333", slot.store, slot.kind, "", "", slot.fields)
    with pytest.raises(WrongKeyError):
        unlock([moved], PW, "m")


@pytest.mark.parametrize("segments", [True, False], ids=["with-index-segments", "packs-only"])
async def test_an_encrypted_store_whose_slots_are_gone(tmp_path: Path, segments: bool) -> None:
    """Every slot deleted: the master key is lost. Opening says so clearly, never reads sealed
    bytes as a plain store's (told by an index segment, or in a store without any, a pack)."""
    path = tmp_path / "s"
    async with castate.StateManager(castate.open(path, key=PW)) as sm:
        for i in range(3):
            await sm.save_session(f"s{i}", {"secret": "x" * 100, "i": i})
    b = LocalBackend(path)
    await b.open()
    try:
        doomed = await b.list_blobs(KEYS_PREFIX) + ([] if segments else await b.list_blobs("index/"))
        await b.delete_blobs([i.name for i in doomed])
        assert bool(await b.list_blobs("index/")) == segments
    finally:
        await b.close()
    for key in (None, PW):
        with pytest.raises(CorruptFileError, match=r"encrypted .* but has no key slots") as caught:
            async with castate.StateManager(castate.open(path, key=key)) as sm:
                await sm.load_session("s0")
        assert caught.value.path == KEYS_PREFIX


class Yielding(MemoryBackend):
    """A memory store whose calls let other tasks run, as a server's round trips do."""

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        await asyncio.sleep(0)
        return await super().list_blobs(prefix)

    async def delete_blobs(self, names: Collection[str]) -> int:
        await asyncio.sleep(0)
        return await super().delete_blobs(names)


async def test_racing_removals_never_remove_the_last_slot() -> None:
    blobs = Yielding()
    keys = await create_keys(blobs, PW)
    other = await add_slot(blobs, PW, KEY)
    results = await asyncio.gather(remove_slot(blobs, FIRST_SLOT), remove_slot(blobs, other.id), return_exceptions=True)
    assert any(isinstance(r, UsageError) for r in results), results  # both saw two slots: one was put back
    slots = await read_slots(blobs)
    assert len(slots) == 1
    opener = PW if slots[0].id == FIRST_SLOT else KEY
    assert same_keys(unlock(slots, opener, "m"), keys)


# -- racing initialisations ------------------------------------------------------------------------


async def test_concurrent_creates_write_one_master() -> None:
    blobs = MemoryBackend()
    results = await asyncio.gather(*(create_keys(blobs, PW) for _ in range(8)), return_exceptions=True)
    keys = [r for r in results if isinstance(r, StoreKeys)]
    assert len(keys) == 8  # one secret: every racer opens the winner's slot
    assert all(same_keys(k, keys[0]) for k in keys)
    assert len(await read_slots(blobs)) == 1
    # racers with different secrets: one wins, the others are told, and no slot of theirs stays
    blobs = MemoryBackend()
    secrets = [Passphrase(f"pw {i}", n=1024) for i in range(6)]
    results = await asyncio.gather(*(create_keys(blobs, s) for s in secrets), return_exceptions=True)
    won = [i for i, r in enumerate(results) if isinstance(r, StoreKeys)]
    assert len(won) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, StoreKeys)), results
    (slot,) = await read_slots(blobs)
    assert slot.store == results[won[0]].store  # type: ignore[union-attr]


RACER = """
import asyncio, sys
import castate

async def main() -> None:
    sm = castate.StateManager(castate.open(sys.argv[1], key=castate.Passphrase(sys.argv[2], n=1024)))
    try:
        async with sm:
            await sm.save_session(sys.argv[3], {"by": sys.argv[3]})
    except castate.ConflictError:
        print("conflict")
    except castate.StoreError as exc:
        print("store error", exc)
    else:
        print("saved")

asyncio.run(main())
"""


def race(tmp_path: Path, same: bool, n: int = 4) -> tuple[str, list[str]]:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, url, "pw" if same else f"pw {i}", f"s{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(n)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return url, outs


@pytest.mark.parametrize("same", [True, False], ids=["same-passphrase", "other-passphrases"])
def test_processes_racing_to_create_one_encrypted_store(tmp_path: Path, same: bool) -> None:
    """Several processes open one new store with a key at once: exactly one master key
    survives, and every save that reported success reads back with it."""
    url, outs = race(tmp_path, same)
    saved = [i for i, out in enumerate(outs) if out == "saved"]
    assert saved, outs
    assert all(out in ("saved", "conflict") or out.startswith("store error") for out in outs), outs

    async def check() -> None:
        blobs = castate.open(url)
        await blobs.open()
        try:
            slots = await read_slots(blobs)  # type: ignore[arg-type]
        finally:
            await blobs.close()
        assert len(slots) == 1
        pw = "pw" if same else f"pw {saved[0]}"
        async with castate.StateManager(castate.open(url, key=Passphrase(pw, n=1024))) as sm:
            for i in saved:
                assert await sm.load_session(f"s{i}") == {"by": f"s{i}"}

    asyncio.run(check())
    if not same:
        assert len(saved) == 1, outs


def test_processes_racing_with_one_passphrase_all_save(tmp_path: Path) -> None:
    _, outs = race(tmp_path, True, n=6)
    assert outs == ["saved"] * 6


# -- the marker ref -------------------------------------------------------------------------------

MKEY = RawKey(b"k" * 32)


async def test_racing_initialisers_agree_on_one_master_key() -> None:
    blobs = MemoryBackend()
    await blobs.open()
    got = await asyncio.gather(*(open_keys(blobs, MKEY) for _ in range(6)))
    assert all(k is not None for k in got)
    assert len({k.store for k in got if k is not None}) == 1  # one master key, whoever won
    assert len({k.ids.key for k in got if k is not None}) == 1
    assert len(await read_slots(blobs)) == 1


async def test_a_racer_with_another_passphrase_gets_wrong_key_not_a_second_master() -> None:
    blobs = MemoryBackend()
    await blobs.open()
    outcomes = await asyncio.gather(
        open_keys(blobs, Passphrase("a", n=1024)), open_keys(blobs, Passphrase("b", n=1024)), return_exceptions=True
    )
    assert sum(isinstance(o, WrongKeyError) for o in outcomes) == 1
    assert len({(await blobs.get_ref(MARKER_REF))}) == 1
    assert len(await read_slots(blobs)) == 1


async def test_an_initialisation_interrupted_before_its_marker_is_finished_at_the_next_open() -> None:
    blobs = MemoryBackend()
    await blobs.open()
    keys = await create_keys(blobs, MKEY)
    await blobs.commit((), [RefUpdate(MARKER_REF, None)])
    assert await blobs.get_ref(MARKER_REF) is None  # as if the process died between slot and marker
    again = await open_keys(blobs, MKEY)
    assert again is not None
    assert again.store == keys.store
    assert (await blobs.get_ref(MARKER_REF)) == marker_value(keys.store)


async def test_a_marker_without_slots_is_damage_never_a_plain_store() -> None:
    blobs = MemoryBackend()
    await blobs.open()
    await create_keys(blobs, MKEY)
    await blobs.delete_blobs([i.name for i in await blobs.list_blobs(KEYS_PREFIX)])
    with pytest.raises(CorruptFileError, match="no key slot"):
        await open_keys(blobs, None)
    repo = castate.Repository(blobs)
    with pytest.raises(CorruptFileError):
        await repo.open()


async def test_a_plain_save_that_lands_while_a_store_is_made_encrypted_undoes_the_encryption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot and the marker are one commit, so no plain save lands between them; one that
    lands after the emptiness check and before that commit makes the encryption undo itself:
    the store stays plain, with the plain writer's data, and the encrypting open fails."""
    from castate.repository.crypto import slots as slots_mod

    url = f"sqlite:///{tmp_path / 's.db'}"
    plain = castate.StateManager(castate.open(url, create=True))
    await plain.repository.open(create=True)
    real = slots_mod._new_slot

    def late(*args: object, **kwargs: object) -> KeySlot:
        asyncio.run_coroutine_threadsafe(plain.save_session("keyless", {"v": "plain data"}), loop).result()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(slots_mod, "_new_slot", late)
    with pytest.raises(StoreError, match="stays plain"):
        async with castate.StateManager(castate.open(url, key=PW)) as enc:
            await enc.save_session("alice", {"v": 1})
    monkeypatch.setattr(slots_mod, "_new_slot", real)
    assert await plain.load_session("keyless") == {"v": "plain data"}
    await plain.save_session("keyless", {"v": "still plain"})  # no marker left behind
    await plain.close()
    blobs = castate.open(url)
    await blobs.open()
    try:
        assert await read_slots(blobs) == []  # type: ignore[arg-type]
    finally:
        await blobs.close()


async def test_removals_racing_on_sqlite_take_turns_under_the_gc_lock(tmp_path: Path) -> None:
    """On a backend whose gc lock excludes (every engine but memory), two removals of a
    two-slot store run one after the other: the second sees the only slot left, and refuses."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    async with castate.StateManager(castate.open(url, key=PW)) as sm:
        await sm.save_session("s", {"v": 1})
    blobs = castate.open(url)
    await blobs.open()
    try:
        other = await add_slot(blobs, PW, KEY)  # type: ignore[arg-type]
        results = await asyncio.gather(
            remove_slot(blobs, FIRST_SLOT),  # type: ignore[arg-type]
            remove_slot(blobs, other.id),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert sum(isinstance(r, UsageError) for r in results) == 1, results
        assert len(await read_slots(blobs)) == 1  # type: ignore[arg-type]
    finally:
        await blobs.close()


async def test_fsck_names_a_skipped_slot_and_an_open_bounds_its_key_derivation() -> None:
    """A damaged slot is skipped at open, and check_storage (fsck) says so; a header of many
    costly passphrase slots makes an open try only what ``MAX_OPEN_WORK`` allows."""
    from castate.keys import MAX_OPEN_WORK, WorkBudget
    from castate.repository.crypto.sealed import SealedBlobs

    blobs = MemoryBackend()
    keys = await create_keys(blobs, PW)
    await blobs.put_blobs([("keys/1111111111111111", b"not json")])
    (problem,) = await SealedBlobs(blobs, keys).check_storage()
    assert "keys/1111111111111111" in problem
    assert "skipped" in problem
    costly = {"kdf": {"name": "scrypt", "n": 1 << 19, "r": 8, "p": 1}}
    budget = WorkBudget()
    tried = sum(budget.take(Passphrase("x", n=1024), costly) for _ in range(64))
    assert tried == MAX_OPEN_WORK // ((1 << 19) * 8)
    assert tried < 64


async def test_a_skipped_slot_can_be_removed() -> None:
    blobs = MemoryBackend()
    await create_keys(blobs, PW)
    await blobs.put_blobs([("keys/1111111111111111", b"not json")])
    await remove_slot(blobs, "1111")
    assert [i.name for i in await blobs.list_blobs(KEYS_PREFIX)] == [KEYS_PREFIX + FIRST_SLOT]
    with pytest.raises(UsageError, match="only key slot"):
        await remove_slot(blobs, FIRST_SLOT)
