"""Bundles: export a session to one file and import it elsewhere, verified object by object;
damaged, truncated or foreign files are refused before any ref is created."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

import castate
from castate.errors import ConflictError, CorruptFileError, CorruptObjectError, NotFoundError
from castate.repository.bundle import HEADER, TRAILER
from tests.strategies import same


def zeros_zstd(mib: int, *, end_frame: bool) -> bytes:
    """A zstd stream of ``mib`` MiB of zeros: a few KiB that expand 30,000 times."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    body = b"".join(cobj.compress(bytes(1 << 20)) for _ in range(mib))
    return body + (cobj.flush() if end_frame else cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))


def state(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "messages": [{"i": i, "content": f"message {i} " * 8} for i in range(100 * step)],
        "doc": "large " * 20_000,
        "raw": bytes(range(256)) * 20,
    }


async def make_source(path: Path) -> tuple[castate.StateManager, list[str]]:
    sm = castate.StateManager(castate.LocalBackend(path))
    cps = []
    for step in range(1, 4):
        await sm.save_session("run", state(step))
        cps.append(await sm.create_checkpoint("run", f"step-{step}"))
    await sm.save_session("other", {"unrelated": True})
    return sm, cps


async def test_export_then_import_into_an_empty_store(tmp_path: Path) -> None:
    src, cps = await make_source(tmp_path / "a")
    bundle = tmp_path / "run.castate"
    out = await src.export_session("run", bundle)
    assert out.objects > 10
    assert len(out.refs) == 4
    assert bundle.stat().st_size == out.bytes
    dst = castate.StateManager(castate.LocalBackend(tmp_path / "b"))
    got = await dst.import_session(bundle)
    assert got.objects == out.objects
    assert got.written == out.objects
    assert same(await dst.load_session("run"), state(3))
    for step, cp in enumerate(cps, 1):
        assert same(await dst.restore_checkpoint(cp), state(step))
    assert await dst.load_session("other") is None
    assert (await dst.fsck(full=True)).ok
    # Again under another id: every object is there already.
    again = await dst.import_session(bundle, session_id="run copy")
    assert again.written == 0
    assert [c.name for c in await dst.list_checkpoints("run copy")] == ["step-3", "step-2", "step-1"]
    with pytest.raises(ConflictError, match="already exists"):
        await dst.import_session(bundle)
    await src.close()
    await dst.close()


async def test_import_writes_only_what_the_target_lacks(tmp_path: Path) -> None:
    src, _ = await make_source(tmp_path / "a")
    bundle = tmp_path / "run.castate"
    out = await src.export_session("run", bundle)
    dst = castate.StateManager(castate.LocalBackend(tmp_path / "b"))
    await dst.save_session("mine", state(2))  # shares most of the bundle's content
    have = sum([1 async for _ in dst.repository.backend.iter_objects()])
    got = await dst.import_session(bundle)
    after = sum([1 async for _ in dst.repository.backend.iter_objects()])
    assert 0 < got.written < out.objects
    assert after - have == got.written
    await src.close()
    await dst.close()


async def test_export_of_a_missing_session(tmp_path: Path) -> None:
    sm = castate.StateManager(castate.LocalBackend(tmp_path / "a"))
    with pytest.raises(NotFoundError):
        await sm.export_session("nope", tmp_path / "x.castate")
    assert not (tmp_path / "x.castate").exists()
    await sm.close()


@pytest.mark.parametrize("where", ["header", "manifest", "body", "trailer", "truncated"])
async def test_damaged_bundles_are_refused_and_create_no_ref(tmp_path: Path, where: str) -> None:
    src, _ = await make_source(tmp_path / "a")
    bundle = tmp_path / "run.castate"
    await src.export_session("run", bundle)
    data = bytearray(bundle.read_bytes())
    if where == "header":
        data[0] ^= 1
    elif where == "manifest":
        data[HEADER.size + 3] ^= 1
    elif where == "body":
        data[len(data) // 2] ^= 1
    elif where == "trailer":
        data[-1] ^= 1
    else:
        del data[-TRAILER.size - 100 :]
    bundle.write_bytes(bytes(data))
    dst = castate.StateManager(castate.LocalBackend(tmp_path / "b"))
    with pytest.raises((CorruptFileError, CorruptObjectError)):
        await dst.import_session(bundle)
    assert await dst.repository.list_refs() == {}
    await src.close()
    await dst.close()


async def test_a_bundle_that_decompresses_to_gigabytes_is_stopped_early(tmp_path: Path) -> None:
    """A 9 KiB object stream that expands to 200 MiB of zeros: import used to decompress each
    1 MiB read whole (up to 32 GiB from one read) before looking at a single record."""
    manifest = orjson.dumps(
        {"castate": "bundle", "version": 1, "created_ns": 1, "session": "s", "refs": {"sessions/s": "00" * 32}}
    )
    bomb = tmp_path / "bomb.castate"
    bomb.write_bytes(
        HEADER.pack(b"CASTBNDL", 1, len(manifest))
        + manifest
        + zeros_zstd(200, end_frame=True)
        + TRAILER.pack(b"CASTTAIL", 0, bytes(32))
    )
    async with castate.StateManager(tmp_path / "store") as sm:
        tracemalloc.start()
        try:
            with pytest.raises(CorruptObjectError):  # the first record: an id of zeros and an empty frame
                await sm.import_session(bomb)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert await sm.list_sessions() == []
    assert peak < 100 << 20
