"""One rule for subclasses of the value types, whatever the session's history (issue 16,
item 13): castate stores dict, list, str, bytes, int, float, bool and None exactly, and
refuses a subclass of them (``OrderedDict``, ``defaultdict``, a ``str`` subclass...) with
``UnsupportedValueError`` naming where it sits, unless ``default=`` converts it. An
incremental save used to accept one whose content equalled what the previous save held
(its C-speed comparison packed a subclass as its base type), where a fresh save refused it.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import pytest

import castate
from castate.errors import UnsupportedValueError


class Name(str):
    pass


class Record(dict):  # type: ignore[type-arg]
    pass


def variants() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(what, a state, the same state with one value a subclass of equal content)."""
    messages = [{"role": "user", "content": f"message {i} " * 5} for i in range(300)]
    swapped = [*messages[:150], Record(messages[150]), *messages[151:]]
    return [
        ("a small dict", {"d": {"x": 1}}, {"d": Record(x=1)}),
        ("an OrderedDict", {"d": {"x": 1, "y": 2}}, {"d": OrderedDict(x=1, y=2)}),
        ("a defaultdict", {"d": {"x": 1}}, {"d": defaultdict(int, x=1)}),
        ("a str in a small dict", {"d": {"name": "bob"}}, {"d": {"name": Name("bob")}}),
        ("a str key", {"d": {"name": "bob"}}, {"d": {Name("name"): "bob"}}),
        ("a long list's element", {"m": messages}, {"m": swapped}),
    ]


@pytest.mark.parametrize("what", [v[0] for v in variants()])
async def test_a_subclass_is_refused_by_fresh_and_incremental_saves_alike(tmp_path: Path, what: str) -> None:
    _, plain, sub = next(v for v in variants() if v[0] == what)
    async with castate.StateManager(tmp_path / "s") as sm:
        with pytest.raises(UnsupportedValueError):
            await sm.save_session("fresh", sub)
        await sm.save_session("incremental", plain)
        with pytest.raises(UnsupportedValueError):
            await sm.save_session("incremental", sub)  # before the fix: accepted
        assert await sm.load_session("incremental") == plain


async def test_a_subclass_in_a_tracked_state_is_refused_too(tmp_path: Path) -> None:
    async with castate.StateManager(tmp_path / "s") as sm:
        state = castate.tracked({"m": [{"content": f"message {i} " * 5} for i in range(300)]})
        await sm.save_session("t", state)
        state["m"][150] = Record(content="message 150 " * 5)
        with pytest.raises(UnsupportedValueError):
            await sm.save_session("t", state)


async def test_default_converts_subclasses_on_both_paths(tmp_path: Path) -> None:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, str):
            return str.__str__(value)
        raise TypeError(type(value).__name__)

    async with castate.StateManager(tmp_path / "s", default=plain) as sm:
        for what, before, sub in variants():
            if what == "a str key":
                continue  # keys are never converted: a key must be a str
            await sm.save_session(what, sub)
            assert await sm.load_session(what) == before
            await sm.save_session(what, before)
            await sm.save_session(what, sub)
            assert await sm.load_session(what) == before
