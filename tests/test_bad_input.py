"""The bad-input catalogue: odd names and unsupported values get clear errors or work, safely."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import InvalidKeyError, UnsupportedValueError

ODD_NAMES = [
    "../../etc/passwd",
    "a/b",
    "/absolute",
    "..",
    ".",
    "\x00",
    "nul\x00inside",
    "x" * 1000,
    "ünïcödé ✓ 日本語 😀",
    "con",
    "with space and\ttab\nnewline",
    "%2F already-encoded",
    "a\\b",
    "*?[glob]",
]


def tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_odd_names_work_inside_the_store(tmp_path: Path, name: str) -> None:
    store = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    sm = castate.StateManager(store)
    try:
        await sm.save_session(name, {"who": name})
        cp = await sm.create_checkpoint(name, name)
        assert await sm.load_session(name) == {"who": name}
        assert await sm.restore_checkpoint(cp) == {"who": name}
        assert [s.session_id for s in await sm.list_sessions()] == [name]
        assert [c.name for c in await sm.list_checkpoints(name)] == [name]
        fs = castate.FileStorageBackend(store)
        await fs.save(name, {"k": 1})
        assert await fs.list_keys() == [name]
        assert await fs.load(name) == {"k": 1}
        await fs.close()
        assert await sm.delete_session(name) == 2
    finally:
        await sm.close()
    assert tree(tmp_path) - {Path("outside")} <= {Path("store")} | {Path("store") / p for p in tree(store)}
    assert not any(outside.iterdir())
    assert {p.parts[0] for p in tree(store)} <= {"castate.json", "packs", "objects", "locks", "refs.journal"}


@pytest.mark.parametrize("name", ["", "x" * 10_000, "bad \udc80 surrogate", 7, None, b"bytes"])
async def test_unusable_names_raise_clearly(store_path: Path, name: Any) -> None:
    sm = castate.StateManager(store_path)
    try:
        await sm.save_session("fine", {"v": 1})
        with pytest.raises(InvalidKeyError):
            await sm.save_session(name, {"v": 2})
        if name is not None:  # None means "the default name" for a checkpoint
            with pytest.raises(InvalidKeyError):
                await sm.create_checkpoint("fine", name)
        with pytest.raises(InvalidKeyError):
            await sm.load_session(name)
        assert [s.session_id for s in await sm.list_sessions()] == ["fine"]
    finally:
        await sm.close()


@pytest.mark.parametrize(
    "bad",
    [
        {1, 2},
        (1, 2),
        datetime.datetime(2024, 1, 1),
        math.nan,
        math.inf,
        -math.inf,
        2**64,
        -(2**63) - 1,
        {3: "non-str key"},
        object(),
    ],
    ids=repr,
)
async def test_unsupported_values_fail_before_anything_is_written(store_path: Path, bad: Any) -> None:
    sm = castate.StateManager(store_path)
    try:
        good = {"messages": [{"content": "kept"}], "n": 1}
        await sm.save_session("s", good)
        objects = sum([1 async for _ in sm.repository.backend.iter_objects()])
        with pytest.raises(UnsupportedValueError) as info:
            await sm.save_session("s", {"messages": [{"content": "kept"}, {"payload": {"deep": bad}}], "n": 2})
        assert info.value.path.startswith("state['messages'][1]['payload']")
        assert sum([1 async for _ in sm.repository.backend.iter_objects()]) == objects
        assert await sm.load_session("s") == good
    finally:
        await sm.close()


async def test_cycles_fail_cleanly(store_path: Path) -> None:
    sm = castate.StateManager(store_path)
    try:
        state: dict[str, Any] = {"a": []}
        state["a"].append(state)
        with pytest.raises(UnsupportedValueError, match="cycle"):
            await sm.save_session("s", state)
        assert await sm.list_sessions() == []
    finally:
        await sm.close()
