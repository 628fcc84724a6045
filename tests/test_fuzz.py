"""Fuzzing the decoders of everything castate reads back: object frames and every object kind,
pack files (record tables and data) and their indexes, the ref journal, its cache
refs.snapshot and bundle files, fed random bytes and mutations of valid ones (hypothesis).
Only castate's own errors may come out: never another exception, a crash, a hang, or an
allocation out of proportion to the input (each example's peak of Python allocations is
measured with tracemalloc).

``CASTATE_FUZZ_EXAMPLES`` sets the examples per target (150; 3,000 with ``CASTATE_FULL=1``).
tests/test_codec_decoder.py fuzzes the node parsers alone; tests/test_local_journal.py the
journal's repair.
"""

from __future__ import annotations

import asyncio
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any

import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import castate
from castate.backends.local import journal as journalfmt
from castate.backends.local import packs, refsnap, volumes
from castate.backends.local.locks import FileLock
from castate.codec import Decoder, Encoder, decode_frame, encode_frame
from castate.codec.objects import KIND_NAMES, object_id
from castate.errors import CastateError
from castate.repository.walk import links
from tests.full_run import FUZZ_EXAMPLES
from tests.journal_support import record_offsets

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOCATION_LIMIT = 64 << 20  # inputs are at most a few hundred KiB


@contextmanager
def bounded_allocation(limit: int = ALLOCATION_LIMIT) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak} bytes allocated"


def mutate(data: st.DataObject, valid: bytes) -> bytes:
    """A few flips, cuts, insertions, overwrites and duplications of ``valid``."""
    buf = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        if not buf:
            buf = bytearray(data.draw(st.binary(max_size=64)))
            continue
        i = data.draw(st.integers(0, len(buf) - 1), label="at")
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "repeat", "max"]), label="op")
        if op == "flip":
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del buf[i:]
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "overwrite":
            chunk = data.draw(st.binary(min_size=1, max_size=8))
            buf[i : i + len(chunk)] = chunk
        elif op == "repeat":
            j = data.draw(st.integers(i, min(len(buf), i + 256)))
            buf[j:j] = buf[i:j]
        else:  # a length or count field set to its largest value
            buf[i : i + 4] = b"\xff\xff\xff\xff"
    return bytes(buf)


def example_state() -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"message {i} " * 12} for i in range(300)],
        "agents": {f"a{j}": {"memory": [f"m{k}" * 50 for k in range(20)]} for j in range(5)},
        "doc": "document line\n" * 8000,  # chunked
        "raw": bytes(range(256)) * 40,
        "nums": list(range(3000)),
    }


@cache
def valid_objects() -> list[tuple[bytes, int, bytes]]:
    """(id, kind, content) of every object of a varied state, and one commit."""
    enc = Encoder()
    root, _ = enc.encode_root(example_state(), None)
    commit = castate.codec.encode_commit(castate.codec.Commit(root, (b"\x01" * 32,), "s", 1, "cp", {"k": [1]}))
    objects = [(oid, kind, content) for oid, (kind, content) in enc.objects.items()]
    objects.append((object_id(0x4B, commit), 0x4B, commit))
    return sorted(objects)


def read_object(oid: bytes, frame: bytes) -> None:
    """Everything castate does with one stored object: verify, parse for links, decode."""
    kind, content = decode_frame(oid, frame)
    links(oid, kind, content, deep=True)
    if kind != 0x4B:
        Decoder({oid: (kind, content)}).build(oid)


@FUZZ
@given(st.data())
def test_object_frames_random_and_mutated(data: st.DataObject) -> None:
    oid, kind, content = data.draw(st.sampled_from(valid_objects()), label="object")
    frame = encode_frame(kind, content, compress=data.draw(st.booleans()))
    frame = data.draw(st.binary(max_size=512)) if data.draw(st.booleans(), label="random") else mutate(data, frame)
    with bounded_allocation(), suppress(CastateError):
        read_object(oid, frame)
    # And the same bytes as the content of an object whose id matches them (a malicious store).
    for fuzz_kind in (kind, data.draw(st.sampled_from(sorted(KIND_NAMES)), label="kind")):
        fid = object_id(fuzz_kind, frame)
        with bounded_allocation(), suppress(CastateError):
            read_object(fid, encode_frame(fuzz_kind, frame, compress=False))


# -- packs ---------------------------------------------------------------------------------------


@cache
def valid_pack() -> bytes:
    """A format-1 pack written by castate 5e76cb1 (the upgrade fixture): what `castate upgrade` reads."""
    (pack,) = (Path(__file__).parent / "fixtures" / "v1" / "local-store" / "packs").glob("*.pack")
    return pack.read_bytes()


@cache
def valid_volume_store() -> dict[str, bytes]:
    """The files of a small local store (journal, volume), and its blobs."""

    async def build(path: Path) -> dict[str, bytes]:
        async with castate.StateManager(castate.Repository(castate.LocalBackend(path))) as sm:
            for step in range(4):
                state = example_state()
                state["step"] = step
                await sm.save_session("s", state)
        return {p.name: p.read_bytes() for p in [path / "refs.journal", *(path / "volumes").glob("*.vol")]}

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(build(Path(tmp)))


def read_pack(path: Path) -> None:
    """Scan a pack, read every record it lists and verify every object in them."""
    pack = packs.Pack(path)
    try:
        packs.scan_pack(pack)
        cache = packs.ChainCache(8 << 20)
        for oid, loc in list(pack.entries.items()):
            rec_off, off, n = packs.unpack_loc(loc)
            try:
                raw = cache.record_bytes(pack, pack.records[rec_off])
                read_object(oid, raw[off : off + n])
            except CastateError:
                continue
    finally:
        pack.close()


@FUZZ
@given(st.data())
def test_pack_files_random_and_mutated(data: st.DataObject) -> None:
    if data.draw(st.booleans(), label="random"):
        blob = packs.PACK_HEADER + data.draw(st.binary(max_size=2048))
    else:
        blob = mutate(data, valid_pack())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pack"
        path.write_bytes(blob)
        with bounded_allocation(), suppress(CastateError):
            read_pack(path)


# -- the ref journal ------------------------------------------------------------------------------


@cache
def valid_journal() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        j = journalfmt.RefJournal(Path(tmp) / "refs.journal", FileLock(Path(tmp) / "refs.lock"))
        j.create()
        j.refresh()
        for i in range(12):
            name = f"sessions/s{i % 3}"
            j.update([castate.backends.RefUpdate(name, bytes([i]) * 32, j.refs.get(name))], f"save {i}")
        j.compact(j.records[4].time_ns)
        for i in range(12, 15):
            name = f"checkpoints/s0/c{i}/x"
            j.update([castate.backends.RefUpdate(name, bytes([i]) * 32, None)], f"checkpoint {i}")
        return j.path.read_bytes()


@FUZZ
@given(st.data())
def test_ref_journals_random_and_mutated(data: st.DataObject) -> None:
    if data.draw(st.booleans(), label="random"):
        blob = valid_journal()[: journalfmt.HEADER_SIZE] + data.draw(st.binary(max_size=1024))
    else:
        blob = mutate(data, valid_journal())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "refs.journal"
        path.write_bytes(blob)
        with bounded_allocation():
            j = journalfmt.RefJournal(path, FileLock(Path(tmp) / "refs.lock"))
            try:
                j.refresh()
                j.reflog()
            except CastateError:
                pass
            try:
                j.repair(Path(tmp) / "quarantine")
                journalfmt.RefJournal(path, FileLock(Path(tmp) / "refs.lock")).refresh()
            except CastateError:
                pass
            finally:
                j.lock.close()


def random_or_mutated_cache(data: st.DataObject, valid: bytes) -> tuple[bytes, bool]:
    """Bytes for a checked cache file (refs.snapshot, a pack index): random, or a mutation of
    ``valid``, half of those re-sealed with a valid blake3 as a crafted file would be; and
    whether it was re-sealed."""
    if data.draw(st.booleans(), label="random"):
        return data.draw(st.binary(max_size=1024)), False
    blob = mutate(data, valid)
    if data.draw(st.booleans(), label="reseal") and len(blob) > 32:
        return blob[:-32] + blake3.blake3(blob[:-32]).digest(), True
    return blob, False


@FUZZ
@given(st.data())
def test_ref_snapshots_random_and_mutated(data: st.DataObject) -> None:
    """refs.snapshot beside an intact journal: no bytes make opening fail, and a damaged
    snapshot never changes the refs. A mutation re-sealed with a valid checksum (as a crafted
    file would be) reaches the parser's field checks; such a file may be trusted, like any
    file of the store (docs/security.md), so only its decoding is checked."""
    journal_bytes = valid_journal()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "refs.journal"
        path.write_bytes(journal_bytes)
        full = journalfmt.RefJournal(path, FileLock(Path(tmp) / "refs.lock"))
        full._refresh(use_snapshot=False)
        expected = dict(full.refs)
        last_start = record_offsets(path)[-1]
        last_hash = blake3.blake3(journal_bytes[last_start : full._offset]).digest()
        valid = refsnap.encode(
            refsnap.Snapshot(full._generation, full._offset, last_start, full._seq, full.count, last_hash, expected)
        )
        full.lock.close()
        assert valid is not None
        assert refsnap.decode(valid) is not None
        blob, resealed = random_or_mutated_cache(data, valid)
        (Path(tmp) / "refs.snapshot").write_bytes(blob)
        with bounded_allocation():
            decoded = refsnap.decode(blob)
            assert decoded is None or isinstance(decoded, refsnap.Snapshot)
            j = journalfmt.RefJournal(path, FileLock(Path(tmp) / "refs.lock"))
            try:
                j.refresh()
                if not resealed:
                    assert j.refs == expected
            except CastateError:
                assert resealed  # a crafted snapshot may disagree with the journal's tail
            finally:
                j.lock.close()


@cache
@FUZZ
@given(st.data())
def test_volumes_random_and_mutated(data: st.DataObject) -> None:
    """A volume's bytes damaged or crafted under an intact journal: a blob reads back with the
    length its place gives (its frame checked; the pack store verifies its content above) or
    raises castate's errors, with bounded memory."""
    files = valid_volume_store()
    name = next(n for n in files if n.endswith(".vol"))
    if data.draw(st.booleans(), label="random"):
        blob = volumes.HEADER + data.draw(st.binary(max_size=2048))
    else:
        blob = mutate(data, files[name])
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        asyncio.run(castate.LocalBackend(store).open())
        (store / "refs.journal").write_bytes(files["refs.journal"])
        (store / "volumes" / name).write_bytes(blob)

        async def read() -> None:
            backend = castate.LocalBackend(store)
            await backend.open()
            try:
                for info in await backend.list_blobs():
                    with suppress(CastateError):
                        got = (await backend.get_blobs([info.name])).get(info.name)
                        assert got is None or len(got) == info.size
            finally:
                await backend.close()

        with bounded_allocation():
            asyncio.run(read())


# -- bundles ---------------------------------------------------------------------------------------


@cache
def valid_bundle() -> bytes:
    async def build(tmp: Path) -> bytes:
        async with castate.StateManager(tmp / "src") as sm:
            await sm.save_session("run", example_state())
            await sm.create_checkpoint("run", "cp")
            await sm.export_session("run", tmp / "run.castate")
        return (tmp / "run.castate").read_bytes()

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(build(Path(tmp)))


def import_into_fresh_store(blob: bytes, check: Callable[[castate.StateManager], Any] | None = None) -> None:
    async def run(tmp: Path) -> None:
        (tmp / "in.castate").write_bytes(blob)
        async with castate.StateManager(tmp / "dst") as sm:
            await sm.save_session("kept", {"kept": True})
            try:
                await sm.import_session(tmp / "in.castate")
                imported = True
            except CastateError:
                imported = False
            sessions = {s.session_id for s in await sm.list_sessions()}
            assert sessions == ({"kept", "run"} if imported else {"kept"})  # all or nothing
            if imported:
                await sm.load_session("run")  # whatever was accepted loads (verified object by object)
            assert await sm.load_session("kept") == {"kept": True}

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


@settings(parent=FUZZ, max_examples=max(20, FUZZ_EXAMPLES // 5))
@given(st.data())
def test_bundles_random_and_mutated(data: st.DataObject) -> None:
    if data.draw(st.booleans(), label="random"):
        blob = valid_bundle()[:24] + data.draw(st.binary(max_size=2048))
    else:
        blob = mutate(data, valid_bundle())
    with bounded_allocation(256 << 20):  # an import holds a batch of up to 4 MiB of frames
        import_into_fresh_store(blob)
