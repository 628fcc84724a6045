"""What docs/security.md promises: loading runs no code from the store (no pickle, no eval),
and a tampered object is refused by its id before any of its bytes is parsed."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import pytest

import castate
import castate.codec.decoder
from castate.codec.objects import KIND_DICT
from castate.errors import CorruptObjectError
from castate.repository.packs import PackStore
from castate.repository.packs.chains import WriterChain
from castate.repository.packs.format import PACK_PREFIX, ZERO_ID, make_pack
from castate.repository.packs.segments import INDEX_PREFIX, make_segment

PACKAGE = Path(castate.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "yaml", "jsonpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def test_no_module_of_castate_can_run_code_from_data() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{path.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in UNSAFE_CALLS:
                found.append(f"{path.name}:{node.lineno}: {node.func.id}()")
    assert found == []
    assert len(list(PACKAGE.rglob("*.py"))) > 30  # the scan saw the package


async def forge_store(path: Path, victim: bytes, frame: bytes) -> None:
    """Rewrite the store's packs so that object ``victim`` is ``frame``: one new pack of its
    objects with that frame in the victim's place, and an index segment listing it, both
    well-formed and named by their hashes (what a hostile writer with the files can do)."""
    async with castate.Repository(castate.LocalBackend(path)) as repo:
        store = repo.backend
        assert isinstance(store, PackStore)
        ids = [info.id async for info in store.iter_objects()]
        frames = {oid: bytes(f) for oid, f in (await store.get_objects(ids)).items()}
    frames[victim] = frame
    raw = b"".join(frames.values())
    chain = WriterChain.new()
    pack, data = make_pack(
        list(frames.items()), chain.compress(raw), chain=chain.id, seq=0, prev=ZERO_ID, raw_len=len(raw),
        chain_raw=0, time_ns=time.time_ns(),
    )  # fmt: skip
    name, segment = make_segment([(pack, pack.entries)])
    blobs = castate.LocalBackend(path)
    await blobs.open()
    try:
        old = [info.name for info in await blobs.list_blobs() if info.name.startswith((PACK_PREFIX, INDEX_PREFIX))]
        await blobs.delete_blobs(old)
        await blobs.put_blobs([(pack.blob, data), (INDEX_PREFIX + name, segment)])
    finally:
        await blobs.close()


async def test_a_swapped_object_is_refused_before_its_bytes_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path))) as sm:
        await sm.save_session("s", {"role": "user", "text": "hello " * 100})
        root = (await sm.repository.read_commit((await sm.resolve("s")).commit)).root
    # A well-formed frame of other content, under the old object's id: it would decode fine.
    async with castate.StateManager(castate.Repository(castate.LocalBackend(tmp_path / "other"))) as sm:
        await sm.save_session("s", {"role": "admin", "text": "hello " * 100})
        forged_root = (await sm.repository.read_commit((await sm.resolve("s")).commit)).root
        forged = bytes((await sm.repository.backend.get_objects([forged_root]))[forged_root])
    assert forged[1] == KIND_DICT
    await forge_store(path, root, forged)

    parsed: list[bytes] = []

    def spy_on(name: str) -> None:
        """Record what the decoder's parser ``name`` is given (a node with refs or without)."""
        real_parse = getattr(castate.codec.decoder, name)

        def spy(oid: bytes, kind: int, content: Any) -> Any:
            parsed.append(bytes(content))
            return real_parse(oid, kind, content)

        monkeypatch.setattr(castate.codec.decoder, name, spy)

    spy_on("parse_node")
    spy_on("parse_body")
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path))) as sm:
        with pytest.raises(CorruptObjectError, match="does not match its id") as info:
            await sm.load_session("s")
    assert info.value.object_id == root.hex()
    assert parsed == []  # never decoded
    async with castate.StateManager(castate.Repository(castate.LocalBackend(tmp_path / "other"))) as sm:
        assert (await sm.load_session("s"))["role"] == "admin"
    assert parsed  # the same object, in its own store, is parsed (the spy sees parsing)
