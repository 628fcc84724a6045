"""What docs/security.md promises: loading runs no code from the store (no pickle, no eval),
and a tampered object is refused by its id before any of its bytes is parsed."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import castate
import castate.codec.decoder
from castate.codec.objects import KIND_DICT
from castate.errors import CorruptObjectError

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


async def test_a_swapped_object_is_refused_before_its_bytes_are_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=True))) as sm:
        await sm.save_session("s", {"role": "user", "text": "hello " * 100})
        root = (await sm.repository.read_commit((await sm.resolve("s")).commit)).root
    victim = path / "objects" / root.hex()[:2] / root.hex()[2:]
    # A well-formed frame of other content, under the old object's name: it would decode fine.
    async with castate.StateManager(castate.Repository(castate.LocalBackend(tmp_path / "other", loose=True))) as sm:
        await sm.save_session("s", {"role": "admin", "text": "hello " * 100})
        forged_root = (await sm.repository.read_commit((await sm.resolve("s")).commit)).root
    forged = tmp_path / "other" / "objects" / forged_root.hex()[:2] / forged_root.hex()[2:]
    victim.write_bytes(forged.read_bytes())
    assert forged.read_bytes()[1] == KIND_DICT

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
    async with castate.StateManager(castate.Repository(castate.LocalBackend(path, loose=True))) as sm:
        with pytest.raises(CorruptObjectError, match="does not match its id") as info:
            await sm.load_session("s")
    assert info.value.object_id == root.hex()
    assert parsed == []  # never decoded
    async with castate.StateManager(castate.Repository(castate.LocalBackend(tmp_path / "other", loose=True))) as sm:
        assert (await sm.load_session("s"))["role"] == "admin"
    assert parsed  # the same object, in its own store, is parsed (the spy sees parsing)
