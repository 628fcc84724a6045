"""castate.repository.crypto.sealed: what SealedBlobs writes below and gives back above."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from castate.backends.base import RefUpdate
from castate.backends.local import LocalBackend
from castate.backends.memory import MemoryBackend
from castate.errors import AlreadyExistsError, ConflictError, CorruptFileError
from castate.repository import refs as names
from castate.repository.crypto.sealed import OVERHEAD, SealedBlobs
from castate.repository.crypto.slots import KEYS_PREFIX, StoreKeys
from castate.testing import value
from tests.journal_support import record_offsets


def keys(master: bytes | None = None) -> StoreKeys:
    return StoreKeys.derive(master or os.urandom(32), "0" * 32, "0" * 16)


@pytest.fixture
async def pair() -> tuple[SealedBlobs, MemoryBackend]:
    inner = MemoryBackend()
    await inner.open()
    return SealedBlobs(inner, keys()), inner


async def test_blobs_round_trip_sealed(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, inner = pair
    items = [("packs/" + "a" * 64, b"pack bytes " * 100), ("index/1", b""), ("packs/x", os.urandom(3000))]
    assert await sealed.put_blobs(items) == 3
    assert await sealed.get_blobs([n for n, _ in items]) == dict(items)
    raw = await inner.get_blobs([n for n, _ in items])
    for name, data in items:
        assert raw[name][:4] == b"CSB1"
        assert len(raw[name]) == len(data) + OVERHEAD
        if data:
            assert data[:16] not in raw[name]
    assert [(i.name, i.size) for i in await sealed.list_blobs()] == sorted((n, len(d)) for n, d in items)
    # two seals of one blob differ (a fresh nonce each time)
    assert sealed.seal_blob("packs/x", b"same") != sealed.seal_blob("packs/x", b"same")
    assert await sealed.get_ranges([("packs/x", 10, 5), ("packs/none", 0, 1)]) == [items[2][1][10:15], None]


async def test_a_blob_moved_or_damaged_reads_empty(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    """A blob copied to another name, from another store, or with a byte changed does not
    decrypt: it reads as b"" (which no pack or segment is), and the others of the call read."""
    sealed, inner = pair
    await sealed.put_blobs([("packs/a", b"secret a"), ("packs/b", b"secret b")])
    raw = await inner.get_blobs(["packs/a"])
    await inner.put_blobs([("packs/c", raw["packs/a"])])  # moved: the name is associated data
    other = SealedBlobs(inner, keys())
    await inner.put_blobs([("packs/d", other.seal_blob("packs/d", b"another store's"))])
    flipped = bytearray(raw["packs/a"])
    flipped[-1] ^= 1
    await inner.put_blobs([("packs/e", bytes(flipped))])
    await inner.put_blobs([("packs/f", b"plain bytes, never sealed"), ("packs/g", b"CSB")])
    got = await sealed.get_blobs(["packs/a", "packs/b", "packs/c", "packs/d", "packs/e", "packs/f", "packs/g"])
    assert got["packs/a"] == b"secret a"
    assert got["packs/b"] == b"secret b"
    assert [got[f"packs/{c}"] for c in "cdefg"] == [b""] * 5
    with pytest.raises(CorruptFileError, match=r"packs/c.*does not decrypt"):
        sealed.open_blob("packs/c", raw["packs/a"])
    with pytest.raises(CorruptFileError, match="bad magic"):
        sealed.open_blob("packs/f", b"plain bytes, never sealed")


async def test_key_slots_are_not_blobs_of_the_store(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, inner = pair
    await inner.put_blobs([(KEYS_PREFIX + "0" * 16, b"{}")])
    assert await sealed.list_blobs() == []
    assert await sealed.list_blobs("k") == []
    for call in (sealed.put_blobs([(KEYS_PREFIX + "1" * 16, b"x")]), sealed.delete_blobs([KEYS_PREFIX + "0" * 16])):
        with pytest.raises(ValueError, match="key slot"):
            await call
    stats = await sealed.stats()
    assert (stats["blobs"], stats["blob_bytes"]) == (0, 0)


SESSION_IDS = ["plain", "with space", "ünïcödé ✓", "a/b", "..", "%41 literally", "x" * 300, "日本語" * 100]


async def test_ref_names_round_trip(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, inner = pair
    refs = {names.session_ref(s): value(i) for i, s in enumerate(SESSION_IDS)}
    refs.update({names.kv_ref(s): value(100 + i) for i, s in enumerate(SESSION_IDS)})
    for i, s in enumerate(SESSION_IDS):
        refs["checkpoints/" + names.new_checkpoint_id(s, f"cp {s}")] = value(200 + i)
    refs.update({"castate/epoch": value(300), "r": value(301), "s/a%": value(302), "s/a%2": value(303)})
    await sealed.update_refs([RefUpdate(n, v, None) for n, v in refs.items()], message="all")
    assert await sealed.list_refs() == refs
    assert await sealed.get_refs(list(refs)) == refs
    # a fresh SealedBlobs (no cache) with the same keys reads the same names
    again = SealedBlobs(inner, sealed.keys)
    assert await again.list_refs() == refs
    # below, only the first part of a name is plaintext
    stored = await inner.list_refs()
    assert len(stored) == len(refs)
    for name in stored:
        first, _, rest = name.partition("/")
        assert first in ("sessions", "kv", "checkpoints", "castate", "s") or not rest
        for s in SESSION_IDS:
            assert quote(s, safe="") not in rest
        assert "epoch" not in name
    assert "r" not in stored
    # sealing is deterministic, so compare-and-swap and lookups work on the sealed names
    assert sealed.seal_name("sessions/plain") == again.seal_name("sessions/plain")
    # a percent-encoded part is sealed as its bytes: a 1 KiB non-ASCII session id stays short
    long_id = names.session_ref("é" * 512)
    assert len(long_id) > 3000
    assert len(sealed.seal_name(long_id)) < 1450


async def test_prefix_listings(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, _ = pair
    refs = {
        "kv/ab": value(1),
        "kv/abc": value(2),
        "kv/b": value(3),
        "kv/%C3%A9t%C3%A9": value(4),
        "checkpoints/s/one/t1": value(5),
        "checkpoints/s/two/t2": value(6),
        "checkpoints/s2/one/t3": value(7),
        "sessions/ab": value(8),
    }
    await sealed.update_refs([RefUpdate(n, v, None) for n, v in refs.items()])
    for prefix in [
        "",
        "k",
        "kv",
        "kv/",
        "kv/a",
        "kv/ab",  # a partial last part
        "kv/abc",
        "kv/%C3",  # part of a percent-encoded character
        "checkpoints/s",  # s and s2
        "checkpoints/s/",  # s only: a whole part
        "checkpoints/s/o",
        "checkpoints/s/one/",
        "checkpoints/s/one/t1",
        "checkpoints/none/",
        "sessions/",
        "nothing",
    ]:
        assert await sealed.list_refs(prefix) == {n: v for n, v in refs.items() if n.startswith(prefix)}, prefix


async def test_reflog_names_and_messages_decrypt(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, inner = pair
    name = names.session_ref("ünïcödé")
    await sealed.update_refs([RefUpdate(name, value(1), None)], message="save of ünïcödé: 12 values")
    await sealed.update_refs([RefUpdate(name, value(2), value(1))])  # no message
    await sealed.copy_ref(name, "checkpoints/x/y/z", message="checkpoint secret-name")
    log = await sealed.reflog()
    assert [(e.name, e.old, e.new, e.message) for e in log] == [
        (name, None, value(1), "save of ünïcödé: 12 values"),
        (name, value(1), value(2), ""),
        ("checkpoints/x/y/z", None, value(2), "checkpoint secret-name"),
    ]
    assert await sealed.reflog(name) == log[:2]
    raw = await inner.reflog()
    assert all("ünïcödé" not in e.message and "secret" not in e.message for e in raw)
    assert raw[1].message == ""
    # a message that does not decrypt is shown as such, never as garbage text
    assert "does not decrypt" in sealed.open_message("~AAAA")
    assert "does not decrypt" in sealed.open_message("~not base64!")
    # the inner backend's own messages (the local store's journal repair) are shown as they are
    assert sealed.open_message("repair: change(s) of a lost record") == "repair: change(s) of a lost record"


async def test_a_ref_name_that_does_not_decrypt_is_left_out_and_reported(
    pair: tuple[SealedBlobs, MemoryBackend],
) -> None:
    """A ref someone wrote without the key never hides the store's own refs from a listing;
    check_storage (fsck) names it."""
    sealed, inner = pair
    await sealed.update_refs([RefUpdate("sessions/mine", value(2), None)])
    await inner.update_refs([RefUpdate("sessions/not-sealed", value(1), None)])
    assert await sealed.list_refs() == {"sessions/mine": value(2)}
    assert [e.name for e in await sealed.reflog()] == ["sessions/mine"]
    (problem,) = await sealed.check_storage()
    assert "sessions/not-sealed" in problem
    assert "does not decrypt" in problem
    other = SealedBlobs(inner, keys())
    await inner.update_refs([RefUpdate("kv/x", value(1), None)])
    with pytest.raises(CorruptFileError):
        other.open_name("kv/" + sealed.seal_name("kv/x").split("/")[1])


async def test_conflicts_name_the_plaintext_ref(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, _ = pair
    name = names.session_ref("my session")
    await sealed.update_refs([RefUpdate(name, value(1), None)])
    with pytest.raises(ConflictError) as caught:
        await sealed.update_refs([RefUpdate(name, value(2), value(9))])
    assert caught.value.ref == name
    assert sealed.seal_name(name) not in str(caught.value)
    with pytest.raises(ConflictError) as caught:
        await sealed.commit([("packs/z", b"z")], [RefUpdate("kv/k", value(3), None)], checks={name: value(7)})
    assert caught.value.ref == name
    await sealed.copy_ref(name, "checkpoints/a/b/c")
    with pytest.raises(ConflictError) as caught:
        await sealed.copy_ref(name, "checkpoints/a/b/c")
    assert caught.value.ref == "checkpoints/a/b/c"


def test_a_conflict_keeps_its_type_and_fields() -> None:
    sealed = SealedBlobs(MemoryBackend(), keys())
    inner_name = sealed.seal_name("sessions/s")
    exc = AlreadyExistsError(f"ref {inner_name} exists", inner_name, session_id="s", expected="e", current="c")
    out = sealed._conflict(exc)
    assert type(out) is AlreadyExistsError
    assert (out.ref, out.session_id, out.expected, out.current) == ("sessions/s", "s", "e", "c")
    assert str(out) == "ref sessions/s exists"


async def test_names_the_contract_refuses_are_refused_before_sealing(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    sealed, inner = pair
    for bad in ["", "r/é", "r/a\nb", "r/" + "a" * 9000]:
        with pytest.raises(ValueError, match="ref name"):
            await sealed.update_refs([RefUpdate(bad, value(1), None)])
    for bad in ["packs/é", "../x", "A"]:
        with pytest.raises(ValueError, match="blob name"):
            await sealed.put_blobs([(bad, b"x")])
    assert await inner.list_refs() == {}
    assert await inner.list_blobs() == []


async def test_a_ref_repair_reports_plaintext_names(tmp_path: Path) -> None:
    """The local store's journal repair names the refs a lost record moved: through SealedBlobs
    those are the names the user gave, not ciphertext."""
    k = keys()
    sealed = SealedBlobs(LocalBackend(tmp_path / "s"), k)
    await sealed.open()
    try:
        for i in range(12):
            name = f"sessions/r{i % 3}"
            await sealed.update_refs([RefUpdate(name, value(i), await sealed.get_ref(name))], message=f"m{i}")
    finally:
        await sealed.close()
    journal = tmp_path / "s" / "refs.journal"
    offsets = record_offsets(journal)
    data = bytearray(journal.read_bytes())
    data[offsets[-1] + 30] ^= 0xFF  # the last record (r2's last move) is lost
    journal.write_bytes(bytes(data))
    report = await SealedBlobs(LocalBackend(tmp_path / "s"), k).repair_refs()
    assert report.damaged
    assert report.maybe_lost == ["sessions/r2"]


async def test_names_seal_in_two_units_and_uuids_as_their_bytes(pair: tuple[SealedBlobs, MemoryBackend]) -> None:
    """After the namespace, the second part is one unit and the rest another (one 16-byte tag
    each); a part that is a canonical UUID (LangGraph's checkpoint and task ids, with or
    without a leading ~) is sealed as its 16 bytes. Every form comes back exactly."""
    sealed, inner = pair
    cp = "1f0d2e2a-3b4c-6d5e-8f9a-0b1c2d3e4f5a"
    task = "~" + "0b1c2d3e-4f5a-4b4c-8d5e-1f0d2e2a3b4c"
    odd = ["1F0D2E2A-3B4C-6D5E-8F9A-0B1C2D3E4F5A", "~~" + cp, cp + "x", "%7E" + cp]
    names_ = [f"langgraph/thread-7/~/{cp}", f"langgraph/thread-7/~/{cp}/{task}", *(f"kv/k/{o}" for o in odd)]
    for n, name in enumerate(names_):
        await sealed.update_refs([RefUpdate(name, value(n), None)])
    assert await sealed.list_refs() == {name: value(n) for n, name in enumerate(names_)}
    stored = sorted(await inner.list_refs("langgraph/"))
    assert all(s.count("/") == 2 for s in stored)  # namespace, thread, one unit for the rest
    packed = sealed.seal_name(names_[1]).split("/")[2]
    unpacked = sealed.seal_name(names_[1].upper().replace("LANGGRAPH/THREAD-7", "langgraph/thread-7")).split("/")[2]
    assert len(unpacked) - len(packed) >= 50  # the two UUIDs take 32 bytes, not 72: 40 bytes, 53 characters
    threads = {n: v for n, v in (await sealed.list_refs()).items() if n.startswith("langgraph/")}
    assert await sealed.list_refs("langgraph/thread-7/~/") == threads


async def test_castates_own_fixed_messages_stay_plain_every_other_is_sealed(
    pair: tuple[SealedBlobs, MemoryBackend],
) -> None:
    sealed, inner = pair
    await sealed.update_refs([RefUpdate("langgraph/t/~/x", value(1), None)], message="langgraph put")
    await sealed.update_refs([RefUpdate("sessions/s", value(2), None)], message="save secret-session")
    raw = [e.message for e in await inner.reflog()]
    assert raw[0] == "langgraph put"
    assert "secret" not in raw[1]
    assert [e.message for e in await sealed.reflog()] == ["langgraph put", "save secret-session"]
