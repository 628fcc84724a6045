"""Bundles and encrypted stores (issue 21): a bundle of an encrypted store is encrypted under
that store's key slots, and an import writes objects under the destination's own ids and
encryption, translating them when the bundle's ids were made another way (plain, or keyed
by another store). Every combination round trips the whole session: head, history,
checkpoints, metadata, chunked values, long lists and typed values."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import castate
from castate.codec import Commit, Decoder, Encoder, encode_commit, parse_commit
from castate.codec.objects import KIND_BYTES, KIND_COMMIT, KIND_DICT, KIND_NAMES, KIND_STR, PLAIN, Ids
from castate.errors import CorruptFileError, KeyRequiredError, UsageError, WrongKeyError
from castate.keys import Passphrase, RawKey
from castate.repository.bundle import HEADER, MAGIC, WRITE_BATCH, import_bundle
from castate.repository.bundle_crypto import RECORD, TAG
from castate.repository.crypto.slots import add_slot
from castate.repository.packs.store import PackStore
from castate.repository.rekey import postorder, references, rewrite
from castate.repository.walk import Walker
from tests.strategies import same, typed_states
from tests.test_bundle_hostile import bundle, commit, node, obj

SOURCE_PW = "source passphrase"
OTHER_KEY = "k" * 32
MARKER = "plaintext-marker-5e1f"


def source_key() -> Passphrase:
    return Passphrase(SOURCE_PW, n=1024)


def state(step: int) -> dict[str, Any]:
    rnd = random.Random(step)
    return {
        "step": step,
        "messages": [{"i": i, "content": f"message {i} " * 8} for i in range(60 * step)],  # runs and an index
        "doc": rnd.randbytes(150_000).hex(),  # chunked str
        "raw": rnd.randbytes(100_000),  # chunked bytes
        "pair": (f"first {step}", "x" * 3000),  # typed value (a tuple) stored as an object
        "tags": {f"tag-{i}" for i in range(300)},  # a set
        "blob": bytes(range(256)) * 12,  # bytes stored on its own
        "note": "a str stored on its own " * 200,
    }


def open_store(path: Path, kind: str) -> castate.StateManager:
    if kind == "plain":
        return castate.StateManager(castate.LocalBackend(path))
    if kind == "sqlite-encrypted":
        return castate.StateManager(castate.open(f"sqlite:///{path}", key=RawKey(OTHER_KEY)))
    key = source_key() if kind == "encrypted" else RawKey(OTHER_KEY)
    return castate.StateManager(castate.open(str(path), key=key))


async def make_source(sm: castate.StateManager) -> list[str]:
    cps = []
    await sm.save_session("run", {"start": True})  # history the bundle does not hold (no ref reaches it)
    for step in range(1, 4):
        await sm.save_session("run", state(step), metadata={"step": step, "by": "test"})
        cps.append(await sm.create_checkpoint("run", f"step-{step}"))
    await sm.save_session("run", state(4))
    await sm.save_session("other", {"unrelated": True})
    return cps


async def view(sm: castate.StateManager, session: str, cps: list[str]) -> dict[str, Any]:
    """Everything a user reads of a session, ids left out (they differ between stores)."""
    history = [
        (h.timestamp, h.name, dict(sorted(h.metadata.items())), h.parent is None)
        for h in await sm.history(session, limit=100)
    ]
    return {
        "head": await sm.load_session(session),
        "history": history,
        "checkpoints": [(c.name, c.timestamp) for c in await sm.list_checkpoints(session)],
        "restored": [await sm.restore_checkpoint(cp) for cp in cps],
    }


def untimed(v: dict[str, Any]) -> dict[str, Any]:
    """A view without its times (to compare sessions saved by different stores)."""
    return {
        **v,
        "history": [h[1:] for h in v["history"]],
        "checkpoints": [c[0] for c in v["checkpoints"]],
    }


async def src_history(path: Path, kind: str) -> list[Any]:
    async with open_store(path, kind) as sm:
        return await sm.history("run")


@pytest.fixture
async def plain_reference(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Any], list[str]]]:
    """What a plain store shows after a plain export and import (today's path)."""
    async with open_store(tmp_path / "ref-src", "plain") as src:
        cps = await make_source(src)
        await src.export_session("run", tmp_path / "ref.castate")
    async with open_store(tmp_path / "ref-dst", "plain") as dst:
        await dst.import_session(tmp_path / "ref.castate")
        yield await view(dst, "run", cps), cps


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        ("plain", "plain"),
        ("plain", "encrypted-other"),
        ("encrypted", "plain"),
        ("encrypted", "encrypted-other"),
        ("encrypted", "sqlite-encrypted"),
    ],
)
async def test_round_trip_between_plain_and_encrypted_stores(
    tmp_path: Path, source: str, destination: str, plain_reference: tuple[dict[str, Any], list[str]]
) -> None:
    expected, _ = plain_reference
    bundle = tmp_path / "run.castate"
    async with open_store(tmp_path / "src", source) as src:
        cps = await make_source(src)
        out = await src.export_session("run", bundle)
        walker = Walker(src.repository.backend)
        await walker.walk([bytes.fromhex(c) for c in out.refs.values()])
        kinds = {KIND_NAMES[k] for k in walker.kinds.values()}
        assert {"commit", "dict", "list", "index", "chunked", "chunk", "typed", "str", "bytes"} <= kinds
        src_view = await view(src, "run", cps)
    assert same(src_view["head"], state(4))
    async with open_store(tmp_path / "dst", destination) as dst:
        got = await import_bundle(
            dst.repository, bundle, key=source_key() if source == "encrypted" else None, plain=True
        )
        assert got.objects == out.objects
        assert got.written == out.objects
        translated = (source, destination) != ("plain", "plain")
        assert (got.refs == out.refs) is not translated  # ref values are this store's ids
        assert dst.repository.backend.ids.keyed is (destination != "plain")
        dst_view = await view(dst, "run", cps)
        # The source's history goes one save further back than the bundle: the import's ends at
        # the first save it holds, whose parent keeps its id in the source (it names nothing here).
        assert len(src_view["history"]) == 5
        assert same(dst_view, {**src_view, "history": src_view["history"][:4]})
        assert same(untimed(dst_view), untimed(expected))
        first_src = (await src_history(tmp_path / "src", source))[-2]
        assert (await dst.history("run"))[-1].parent == first_src.parent
        assert (await dst.fsck(full=True)).ok
        # The same bundle again, under another id: every object is there already.
        again = await import_bundle(
            dst.repository,
            bundle,
            session_id="run copy",
            key=source_key() if source == "encrypted" else None,
            plain=True,
        )
        assert again.written == 0
        assert again.refs == {n.replace("run", "run%20copy", 1): c for n, c in got.refs.items()}
        assert same(await dst.load_session("run copy"), state(4))
        await dst.gc(grace=0, reflog_expire=0)
        assert (await dst.fsck(full=True)).ok
        assert same(await dst.load_session("run"), state(4))


async def test_an_encrypted_bundle_back_into_its_own_store_needs_no_key_and_no_translation(tmp_path: Path) -> None:
    bundle = tmp_path / "run.castate"
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await make_source(sm)
        out = await sm.export_session("run", bundle)
        got = await sm.import_session(bundle, session_id="copy")  # the store's own key opens it
        assert got.written == 0
        assert got.refs == {n.replace("run", "copy", 1): c for n, c in out.refs.items()}
        assert same(await sm.load_session("copy"), state(4))


async def test_an_encrypted_bundle_holds_no_plaintext(tmp_path: Path) -> None:
    bundle = tmp_path / "run.castate"
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("secret-session", {"text": "the patient's name is Alice " * 100, "n": 7})
        await sm.create_checkpoint("secret-session", "before-diagnosis")
        await sm.export_session("secret-session", bundle)
    data = bundle.read_bytes()
    assert data.startswith(b"CASTBNDL\x02")
    for marker in (b"CASTTAIL", b"secret-session", b"secret%2Dsession", b"before-diagnosis", b"Alice", b"sessions/"):
        assert marker not in data
    assert b"checkpoints" not in data
    assert b"\x28\xb5\x2f\xfd" not in data
    assert bundle.stat().st_mode & 0o777 == 0o600


async def test_keys_of_an_encrypted_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "run.castate"
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("run", {"v": 1})
        await sm.export_session("run", bundle)
    async with open_store(tmp_path / "dst", "plain") as dst:
        with pytest.raises(KeyRequiredError, match="CASTATE_BUNDLE_PASSWORD"):
            await dst.import_session(bundle)
        with pytest.raises(WrongKeyError, match="opens none of the 1 key slots"):
            await import_bundle(dst.repository, bundle, key=Passphrase("not it", n=1024), plain=True)
        with pytest.raises(WrongKeyError):
            await import_bundle(dst.repository, bundle, key=RawKey(OTHER_KEY), plain=True)
        assert await dst.repository.list_refs() == {}
        monkeypatch.setenv("CASTATE_BUNDLE_PASSWORD", SOURCE_PW)
        await dst.import_session(bundle, plain=True)  # the environment's bundle key
        assert await dst.load_session("run") == {"v": 1}
    monkeypatch.delenv("CASTATE_BUNDLE_PASSWORD")
    async with open_store(tmp_path / "dst2", "plain") as dst:
        monkeypatch.setenv("CASTATE_PASSWORD", SOURCE_PW)  # the store key variables are tried last
        await dst.import_session(bundle, plain=True)
        assert await dst.load_session("run") == {"v": 1}
        monkeypatch.delenv("CASTATE_PASSWORD")
    async with open_store(tmp_path / "other", "encrypted-other") as dst:
        with pytest.raises(KeyRequiredError, match="the key of the store it goes into does not open it"):
            await dst.import_session(bundle)


async def test_a_key_added_to_the_store_before_export_opens_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "run.castate"
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("run", {"v": 2})
        store = sm.repository.backend
        assert isinstance(store, PackStore)
        await add_slot(store.raw, source_key(), RawKey(OTHER_KEY), label="ci")
        await sm.export_session("run", bundle)
    async with open_store(tmp_path / "dst", "plain") as dst:
        await import_bundle(dst.repository, bundle, key=RawKey(OTHER_KEY), plain=True)
        assert await dst.load_session("run") == {"v": 2}


async def test_the_cli_moves_a_session_out_of_an_encrypted_store_with_the_bundle_variables(tmp_path: Path) -> None:
    from tests.test_cli import run

    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("run", {"v": [1, 2, 3]})
    bundle = tmp_path / "run.castate"
    run("export", "run", str(bundle), store=tmp_path / "src", env={"CASTATE_PASSWORD": SOURCE_PW})
    assert b"sessions/" not in bundle.read_bytes()
    run("import", str(bundle), "--plain", store=tmp_path / "dst", env={"CASTATE_BUNDLE_PASSWORD": SOURCE_PW})
    assert json.loads(run("show", "run", store=tmp_path / "dst")) == {"v": [1, 2, 3]}


@pytest.fixture
async def big_bundle(tmp_path: Path) -> Path:
    """An encrypted bundle of several records (incompressible values)."""
    bundle = tmp_path / "big.castate"
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("run", {"noise": random.Random(7).randbytes(3 * RECORD), "small": [1, 2, 3]})
        await sm.export_session("run", bundle)
    assert bundle.stat().st_size > 3 * (RECORD + TAG)
    return bundle


def record_start(data: bytes | bytearray, i: int) -> int:
    header = 20 + int.from_bytes(data[16:20], "little")
    return header + i * (RECORD + TAG)


@pytest.mark.parametrize(
    "damage",
    [
        "body byte",
        "last byte",
        "key header",
        "truncated",
        "cut at a record",
        "record dropped",
        "records swapped",
        "appended",
    ],
)
async def test_a_damaged_encrypted_bundle_is_refused_and_the_store_works_on(
    tmp_path: Path, big_bundle: Path, damage: str
) -> None:
    data = bytearray(big_bundle.read_bytes())
    r1, r2 = record_start(data, 1), record_start(data, 2)
    if damage == "body byte":
        data[r1 + 1000] ^= 1
    elif damage == "last byte":
        data[-1] ^= 0x80
    elif damage == "key header":
        data[data.index(b'"label"') + 9] ^= 1  # a slot's label: no slot field the key opens with
    elif damage == "truncated":
        del data[-100:]
    elif damage == "cut at a record":
        del data[r2:]
    elif damage == "record dropped":
        del data[r1:r2]
    elif damage == "records swapped":
        data[r1:r2], data[record_start(data, 0) : r1] = data[record_start(data, 0) : r1], data[r1:r2]
    else:
        data += b"\x00" * 40
    big_bundle.write_bytes(bytes(data))
    async with open_store(tmp_path / "dst", "encrypted-other") as dst:
        await dst.save_session("mine", {"kept": True})
        with pytest.raises(CorruptFileError, match=str(big_bundle.name)):
            await import_bundle(dst.repository, big_bundle, key=source_key(), plain=True)
        assert set(await dst.repository.list_refs()) == {"sessions/mine"}
        await dst.gc(grace=0, reflog_expire=0)
        assert (await dst.fsck(full=True)).ok
        assert await dst.load_session("mine") == {"kept": True}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("too many slots", "65 key slots"),
        ("no slots", "no key slots"),
        ("another store's slot", "key slots of another store"),
        ("bad salt", "bad salt"),
        ("not json", "unreadable key header"),
    ],
)
async def test_a_hostile_key_header_is_refused_before_any_key_is_tried(tmp_path: Path, change: str, error: str) -> None:
    bundle = tmp_path / "run.castate"
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("run", {"v": 1})
        await sm.export_session("run", bundle)
    data = bundle.read_bytes()
    end = 20 + int.from_bytes(data[16:20], "little")
    header = json.loads(data[20:end])
    if change == "too many slots":
        header["slots"] = header["slots"] * 65
    elif change == "no slots":
        header["slots"] = []
    elif change == "another store's slot":
        header["slots"].append({**header["slots"][0], "store": "0" * 32})
    elif change == "bad salt":
        header["salt"] = "AAAA"
    raw = b"{" if change == "not json" else json.dumps(header).encode()
    bundle.write_bytes(HEADER.pack(MAGIC, 2, len(raw)) + raw + data[end:])
    async with open_store(tmp_path / "dst", "plain") as dst:
        with pytest.raises(CorruptFileError, match=error):
            await import_bundle(dst.repository, bundle, key=WrongUnwrap(), plain=True)
        assert await dst.repository.list_refs() == {}


class WrongUnwrap(Passphrase):
    """A key that fails the test when any slot is tried with it."""

    def __init__(self) -> None:
        super().__init__("never used", n=1024)

    def unwrap(self, fields: Any, aad: bytes, where: str) -> bytes:
        raise AssertionError("a slot was tried")


async def test_an_undamaged_big_bundle_imports(tmp_path: Path, big_bundle: Path) -> None:
    async with open_store(tmp_path / "dst", "plain") as dst:
        await import_bundle(dst.repository, big_bundle, key=source_key(), plain=True)
        got = await dst.load_session("run")
        assert got is not None
        assert got["noise"] == random.Random(7).randbytes(3 * RECORD)


async def test_translating_a_hostile_bundle_holds_one_object_at_a_time(tmp_path: Path) -> None:
    """A plain bundle of a few KiB whose objects are 16 MiB each, ten leaves and ten nodes that hold
    ids alike, into an encrypted store: leaves are written as they come, nodes wait on disk
    (encrypted), and memory stays within a batch plus a few copies of one object."""
    big = 16 << 20
    values = [obj(KIND_BYTES, bytes(big - 1) + bytes([i])) for i in range(10)]
    nodes = [node(KIND_DICT, {"v": None, "pad": bytes(big) + bytes([i])}, [values[i][0]]) for i in range(10)]
    root = node(KIND_DICT, {f"n{i}": None for i in range(10)}, [oid for oid, _ in nodes])
    head = commit(root[0])
    path = bundle(tmp_path / "bomb.castate", [head, root, *nodes, *values], head[0])
    assert path.stat().st_size < 8 << 10
    del values, nodes
    async with open_store(tmp_path / "dst", "encrypted-other") as sm:
        tracemalloc.start()
        try:
            got = await sm.import_session(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got.written == 22
        assert await sm.repository.head("sessions/s") == bytes.fromhex(got.refs["sessions/s"]) != head[0]
        assert (await sm.fsck()).ok
    print(f"translating import of 20 objects of 16 MiB: peak {peak / 2**20:.0f} MiB traced")
    assert peak < 7 * big + WRITE_BATCH  # 96 MiB measured; holding the ten nodes would take 160 MiB more


# -- rekeying, on its own ----------------------------------------------------------------


def translate(objects: dict[bytes, tuple[int, bytes]], ids: Ids) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """(old id -> new id, new id -> content): the import's translation, without a store."""
    new: dict[bytes, bytes] = {}
    out: dict[bytes, bytes] = {}
    waiting = {}
    for oid, (kind, content) in objects.items():
        held = references(oid, kind, content)
        if held:
            waiting[oid] = held
        else:
            new[oid] = ids.object_id(kind, content)
            out[new[oid]] = content
    for oid in postorder(waiting):
        kind, content = objects[oid]
        rewritten = rewrite(oid, kind, content, new)
        new[oid] = ids.object_id(kind, rewritten)
        out[new[oid]] = rewritten
    return new, out


def encoded(value: dict[str, Any], ids: Ids) -> tuple[bytes, bytes, dict[bytes, tuple[int, bytes]]]:
    """(root, head, objects): a state and a commit on it (whose parent is outside the objects)."""
    enc = Encoder(ids=ids)
    root, _ = enc.encode_root(value, None)
    content = encode_commit(Commit(root, (b"p" * 32,), "s", 1, "n", {"m": [1, "x"]}))
    head = ids.object_id(KIND_COMMIT, content)
    return root, head, {**enc.objects, head: (KIND_COMMIT, content)}


@settings(max_examples=25, deadline=None)
@given(value=typed_states, refs=st.integers(0, 150), long=st.integers(0, 3000))
def test_translated_objects_hold_the_same_state_and_translate_back(value: dict[str, Any], refs: int, long: int) -> None:
    # Strings of over 2 KiB are objects of their own: a long list of them is cut into runs,
    # and its index into levels, where the ids fall, so the tree's shape depends on the ids.
    value = {**value, "refs": [f"{i:05}" + "y" * 2100 for i in range(refs)], "long": list(range(long))}
    value["chunked"] = "z" * (70_000 if refs % 2 else 0)
    k1, k2 = Ids(b"1" * 32), Ids(b"2" * 32)
    root, head, plain = encoded(value, PLAIN)
    new, out = translate(plain, k1)
    kinds = {new[o]: k for o, (k, _) in plain.items()}
    assert all(k1.object_id(kinds[o], c) == o for o, c in out.items())
    assert same(Decoder({o: (kinds[o], c) for o, c in out.items()}).build(new[root]), value)
    translated_head = parse_commit(new[head], out[new[head]])
    assert (translated_head.root, translated_head.parents) == (new[root], (b"p" * 32,))  # history outside kept
    # On: keyed to keyed, keyed back to plain, gives the original objects byte for byte.
    new2, out2 = translate({o: (kinds[o], c) for o, c in out.items()}, k2)
    kinds2 = {new2[o]: k for o, k in kinds.items()}
    back, out3 = translate({o: (kinds2[o], c) for o, c in out2.items()}, PLAIN)
    assert back[new2[new[head]]] == head
    assert out3 == {oid: content for oid, (_, content) in plain.items()}


async def test_an_encrypted_bundle_goes_into_a_new_plain_store_only_when_asked(tmp_path: Path) -> None:
    """An encrypted bundle imported into an empty plain store would land decrypted on disk:
    refused, unless the import asks for a plain copy; a store given a key is made encrypted."""
    async with open_store(tmp_path / "src", "encrypted") as sm:
        await sm.save_session("run", {"v": MARKER})
        await sm.export_session("run", tmp_path / "run.castate")
    bundle = tmp_path / "run.castate"
    async with castate.StateManager(castate.open(tmp_path / "dst")) as dst:
        with pytest.raises(UsageError, match="plain copy"):
            await import_bundle(dst.repository, bundle, key=source_key())
        assert await dst.list_sessions() == []
        await import_bundle(dst.repository, bundle, key=source_key(), plain=True)
        assert await dst.load_session("run") == {"v": MARKER}
    async with castate.StateManager(castate.open(tmp_path / "enc", key=RawKey(OTHER_KEY))) as enc:
        await import_bundle(enc.repository, bundle, key=source_key())
        assert await enc.load_session("run") == {"v": MARKER}
    data = b"".join(p.read_bytes() for p in (tmp_path / "enc").rglob("*") if p.is_file())
    assert MARKER.encode() not in data


async def test_a_bundle_key_given_for_a_plain_bundle_is_refused(tmp_path: Path) -> None:
    """Whoever gives a bundle key expects the envelope's authenticity; a plain file has none."""
    async with open_store(tmp_path / "src", "plain") as sm:
        await sm.save_session("run", {"v": 1})
        await sm.export_session("run", tmp_path / "run.castate")
    async with castate.StateManager(castate.open(tmp_path / "dst")) as dst:
        with pytest.raises(UsageError, match="not encrypted, but a bundle key was given"):
            await import_bundle(dst.repository, tmp_path / "run.castate", key=source_key())


async def test_a_translated_bundle_cannot_graft_this_stores_history(tmp_path: Path) -> None:
    """Ref values (commit ids) are readable in an encrypted store's files without the key. A
    plain bundle whose commit names one of them as its parent would, once translated, run the
    imported session's history into another session's: it is refused, and nothing moves."""
    async with open_store(tmp_path / "dst", "encrypted-other") as dst:
        await dst.save_session("bob", {"secret": "bob's state"})
        bob = bytes.fromhex((await dst.list_sessions())[0].head or "")
        root = obj(KIND_STR, b"mallory")
        forged = obj(KIND_COMMIT, encode_commit(Commit(root[0], (bob,), "s", 1, None, {})))
        path = bundle(tmp_path / "graft.castate", [root, forged], forged[0])
        with pytest.raises(CorruptFileError, match="cannot point into this one"):
            await import_bundle(dst.repository, path, session_id="alice")
        assert [s.session_id for s in await dst.list_sessions()] == ["bob"]
