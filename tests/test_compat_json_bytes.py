"""JSON payloads stored by structure must read back byte for byte; anything else stays bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castate import MemoryBackend
from castate.compat.json_bytes import FORMAT_BYTES, FORMAT_JSON, bytes_state, json_state, render
from castate.compat.marsys import MarsysBytesBackend
from castate.errors import StoreError
from tests.strategies import text

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=8) | st.dictionaries(text, children, max_size=6),
    max_leaves=40,
)
documents = st.dictionaries(text, json_values, max_size=6) | st.lists(json_values, min_size=1, max_size=6)
styles = st.fixed_dictionaries(
    {
        "indent": st.sampled_from([None, 0, 1, 2, 4]),
        "separators": st.sampled_from([None, (",", ":")]),
        "ensure_ascii": st.booleans(),
    }
)


def as_stored(value: Any) -> Any:
    """What castate gives back: every dict with its keys sorted."""
    if type(value) is dict:
        return {k: as_stored(value[k]) for k in sorted(value)}
    if type(value) is list:
        return [as_stored(v) for v in value]
    return value


def dumps(doc: Any, style: dict[str, Any], newline: bool) -> bytes:
    separators = style["separators"]
    if separators is None and style["indent"] is not None:
        separators = (",", ": ")
    out = json.dumps(doc, indent=style["indent"], separators=separators, ensure_ascii=style["ensure_ascii"])
    return (out + ("\n" if newline else "")).encode()


@settings(max_examples=150, deadline=None)
@given(documents, styles, st.booleans())
def test_json_dumps_output_is_stored_by_structure_and_renders_exactly(doc: Any, style: dict, newline: bool) -> None:
    data = dumps(doc, style, newline)
    state = json_state(data)
    assert state is not None, data
    assert state["format"] == FORMAT_JSON
    assert render(as_stored(state)) == data  # after castate sorted every dict's keys


@settings(max_examples=40, deadline=None)
@given(documents, styles)
async def test_bytes_backend_roundtrip_through_a_real_store(doc: Any, style: dict) -> None:
    data = dumps(doc, style, newline=False)
    async with MarsysBytesBackend(MemoryBackend()) as store:
        await store.write("s/snapshot.json", data)
        assert await store.read("s/snapshot.json") == data


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1e5}',  # json.dumps would write 100000.0
        b'{"a": 1, "a": 2}',  # duplicate keys
        b'{"a":1, "b":2}',  # mixed separators
        b'{\n\t"a": 1\n}',  # tab indent
        b'{"a": 1}  ',  # trailing spaces
        b'{"a": "\\u00e9", "b": "\xc3\xa9"}',  # one escaped and one raw non-ASCII character
        b"[" * 5000 + b"]" * 5000,  # deeper than Python's recursion limit
        b"\xff\xfe{not json",
        b'"a bare string"',
        b"123",
        b"",
    ],
)
def test_other_payloads_are_not_structural(data: bytes) -> None:
    assert json_state(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"z": 1, "a": {"y": [1, {"b": 2, "a": 1}], "x": null}}',
        b'[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, 3]',
        b'{"n": NaN}',  # JSON castate cannot hold is still renderable; the backend keeps it as bytes
        b"{}",
        b"[]",
        b'{\n  "a": [],\n  "b": {}\n}\n',
    ],
)
def test_key_order_and_formatting_survive(data: bytes) -> None:
    state = json_state(data)
    assert state is not None
    assert render(as_stored(state)) == data


def test_lists_of_equally_ordered_dicts_keep_one_order() -> None:
    doc = [{"role": "user", "content": f"m{i}"} for i in range(50)]
    state = json_state(json.dumps(doc).encode())
    assert state is not None
    assert state["order"] == {"e": {"k": ["role", "content"]}}  # an append changes nothing here


def test_bytes_state_and_errors() -> None:
    assert render(bytes_state(b"\x00\x01")) == b"\x00\x01"
    assert bytes_state(b"x")["format"] == FORMAT_BYTES
    with pytest.raises(StoreError, match="not a byte payload"):
        render({"step": 1})
    state = json_state(b'{"b": 1, "a": 2}')
    assert state is not None
    state["order"] = {"k": ["b", "c"]}
    with pytest.raises(StoreError, match="key order"):
        render(state)


async def test_json_that_castate_cannot_hold_is_kept_as_bytes() -> None:
    async with MarsysBytesBackend(MemoryBackend()) as store:
        cases = [
            b'{"big": 123456789012345678901234567890}',
            b'{"s": "\\ud800"}',
            b"[" * 300 + b"]" * 300,  # deeper than castate nests
        ]
        for data in cases:
            await store.write("k", data)
            assert await store.read("k") == data
            stored = await store.repository.load("bytes/k")
            assert stored["format"] == FORMAT_BYTES
        # NaN and Infinity (which Python's json reads and writes) are held as JSON since format 2.
        await store.write("k", b'{"n": NaN, "m": -Infinity}')
        assert await store.read("k") == b'{"n": NaN, "m": -Infinity}'
        assert (await store.repository.load("bytes/k"))["format"] == "json"
