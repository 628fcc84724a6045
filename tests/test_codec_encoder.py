"""The encoder: the value domain, canonical ids, and how states split into objects."""

from __future__ import annotations

import datetime
import math
import random
import uuid
from typing import Any

import pytest

from castate.codec import Decoder, Encoder
from castate.codec.encoder import BLOB_MIN, CHUNK_MIN, INLINE_MAX, MAX_DEPTH
from castate.codec.objects import KIND_CHUNK, KIND_CHUNKED, KIND_DICT, KIND_INDEX, KIND_LIST, KIND_STR
from castate.errors import UnsupportedValueError
from tests.strategies import same


def encode(state: dict[str, Any], shadow: Any = None, default: Any = None) -> tuple[bytes, Any, dict[bytes, Any]]:
    enc = Encoder(default)
    root, new_shadow = enc.encode_root(state, shadow)
    return root, new_shadow, enc.objects


def kinds(objects: dict[bytes, Any]) -> list[int]:
    return sorted(kind for kind, _ in objects.values())


# -- the value domain ----------------------------------------------------------------------


def _cycle_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"a": {}}
    d["a"]["back"] = d
    return d


def _cycle_list() -> dict[str, Any]:
    lst: list[Any] = [1]
    lst.append(lst)
    return {"x": {"y": lst}}


@pytest.mark.parametrize(
    ("state", "fragment", "path"),
    [
        ({"tags": {1, 2}}, "set", "state['tags']"),
        ({"pair": (1, 2)}, "tuple", "state['pair']"),
        ({"a": {"when": datetime.datetime(2024, 1, 1)}}, "datetime", "state['a']['when']"),
        ({"a": [1, 2, {"ts": datetime.date(2024, 1, 1)}]}, "date", "state['a'][2]['ts']"),
        ({"x": math.nan}, "non-finite float", "state['x']"),
        ({"x": [math.inf]}, "non-finite float", "state['x'][0]"),
        ({"x": -math.inf}, "non-finite float", "state['x']"),
        ({"m": {1: "a"}}, "key 1 is not a str", "state['m']"),
        ({"n": 2**64}, "64-bit", "state['n']"),
        ({"n": -(2**63) - 1}, "64-bit", "state['n']"),
        ({"s": "bad \udc80 text"}, "surrogate", "state['s']"),
        ({"k": {"bad \ud800": 1}}, "surrogate", "state['k']"),
        ({"b": bytearray(b"x")}, "bytearray", "state['b']"),
        ({"u": uuid.UUID(int=1)}, "UUID", "state['u']"),
        ({"o": object()}, "object", "state['o']"),
    ],
)
def test_unsupported_values_name_their_path(state: dict[str, Any], fragment: str, path: str) -> None:
    with pytest.raises(UnsupportedValueError) as info:
        encode(state)
    assert fragment in str(info.value)
    assert info.value.path == path


def test_cycles_are_refused() -> None:
    for state in (_cycle_dict(), _cycle_list()):
        with pytest.raises(UnsupportedValueError, match="cycle"):
            encode(state)


def test_too_deep_is_refused_with_a_clear_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(UnsupportedValueError, match="deeper than"):
        encode(deep)


def test_the_state_must_be_a_dict() -> None:
    with pytest.raises(UnsupportedValueError, match="must be a dict"):
        encode([1, 2])  # type: ignore[arg-type]


def test_default_hook_converts_unsupported_values() -> None:
    when = datetime.datetime(2024, 5, 1, 12, 0)
    state = {"when": when, "tags": {"b"}}
    root, _, objects = encode(state, default=lambda v: str(v) if isinstance(v, datetime.datetime) else sorted(v))
    assert Decoder(objects).build(root) == {"when": str(when), "tags": ["b"]}


def test_default_hook_errors_are_reported() -> None:
    def refuse(value: Any) -> Any:
        raise ValueError("no thanks")

    with pytest.raises(UnsupportedValueError, match="no thanks"):
        encode({"x": {1, 2}}, default=refuse)


def test_types_survive_exactly() -> None:
    state = {
        "ints": [0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1],
        "floats": [0.0, -0.0, 1.0, 1e300, -2.5e-300, 0.1],
        "bools": [True, False],
        "none": None,
        "bytes": [b"", b"\x00\xff", bytes(range(256)) * 20],
        "strs": ["", "1", "true", "null", "é", "\x00", "😀" * 1000],
        "mixed": [1, 1.0, True, "1", b"1"],
    }
    root, _, objects = encode(state)
    assert same(Decoder(objects).build(root), state)


# -- canonical ids ---------------------------------------------------------------------------


def test_key_order_does_not_change_ids() -> None:
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert encode(a)[0] == encode(b)[0]


def test_different_types_have_different_ids() -> None:
    ids = {encode({"v": v})[0] for v in (1, 1.0, True, "1", b"1", [1], None, 0, -0.0, 0.0)}
    assert len(ids) == 10


# -- splitting ---------------------------------------------------------------------------------


def test_small_values_stay_inline() -> None:
    _, _, objects = encode({"a": 1, "b": {"c": [1, 2, 3]}, "s": "short"})
    assert kinds(objects) == [KIND_DICT]


def test_big_dicts_and_strings_become_objects() -> None:
    state = {"msg": {"content": "x" * (INLINE_MAX + 10)}, "doc": "y" * (BLOB_MIN + 10)}
    _, _, objects = encode(state)
    assert kinds(objects) == [KIND_DICT, KIND_DICT, KIND_STR]


def _messages(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"message number {i} " * 20, "i": i} for i in range(n)]


def test_appending_to_a_long_list_writes_few_objects() -> None:
    state = {"messages": _messages(10_000), "step": 0}
    _, shadow, first = encode(state)
    assert kinds(first).count(KIND_INDEX) >= 1
    for step in range(1, 6):
        state["messages"].append({"role": "assistant", "content": f"reply {step} " * 30, "i": -step})
        state["step"] = step
        _, shadow, new = encode(state, shadow)
        # the new message, the tail run, the index path and the root: O(1), not O(list)
        assert len(new) <= 6, kinds(new)
        assert kinds(new).count(KIND_LIST) == 1


def test_fresh_encoding_of_an_appended_list_shares_all_but_the_tail() -> None:
    state = {"messages": _messages(3_000)}
    _, _, before = encode(state)
    state["messages"].append({"role": "tool", "content": "done"})
    _, _, after = encode(state)
    assert len(set(after) - set(before)) <= 6


def test_unchanged_state_reuses_everything() -> None:
    state = {"messages": _messages(2_000), "agents": {"a": {"memory": _messages(50)}}}
    root, shadow, _ = encode(state)
    root2, _, new = encode(state, shadow)
    assert root2 == root
    assert new == {}


def test_large_strings_are_chunked_and_edits_store_a_few_chunks() -> None:
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    text = " ".join(rng.choice(words) for _ in range(200_000))[:1_000_000]
    assert len(text) > CHUNK_MIN
    _, _, first = encode({"doc": text})
    assert KIND_CHUNKED in kinds(first)
    chunks = kinds(first).count(KIND_CHUNK)
    assert chunks > 50
    edited = text[: len(text) // 2] + "AN EDIT IN THE MIDDLE" + text[len(text) // 2 :]
    root2, _, second = encode({"doc": edited})
    new_chunks = [oid for oid in second if oid not in first and second[oid][0] == KIND_CHUNK]
    assert 1 <= len(new_chunks) <= 3
    assert Decoder({**first, **second}).build(root2) == {"doc": edited}


def test_large_bytes_roundtrip() -> None:
    data = bytes(range(256)) * 2000
    root, _, objects = encode({"blob": data})
    out = Decoder(objects).build(root)
    assert type(out["blob"]) is bytes
    assert out["blob"] == data


def test_big_dicts_are_split_into_runs() -> None:
    state = {"cache": {f"key-{i:05d}": f"value {i}" for i in range(5_000)}}
    root, _, objects = encode(state)
    assert KIND_INDEX in kinds(objects)
    assert kinds(objects).count(KIND_DICT) > 3
    assert Decoder(objects).build(root) == state
    state["cache"]["key-02500"] = "changed"
    _, _, again = encode(state)
    assert len(set(again) - set(objects)) <= 5


def test_shared_dicts_are_encoded_once_and_decoded_apart() -> None:
    shared = {"role": "user", "content": "shared content " * 40}
    state = {"messages": [shared], "agents": {"a": {"memory": [shared]}}}
    root, _, objects = encode(state)
    out = Decoder(objects).build(root)
    assert out == state
    assert out["messages"][0] is not out["agents"]["a"]["memory"][0]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, math.nan),
        ([1, 2], (1, 2)),
        ("00000000-0000-0000-0000-000000000001", uuid.UUID(int=1)),
        ("2024-01-01 00:00:00", datetime.datetime(2024, 1, 1)),
        (1, 2**70),
    ],
    ids=["nan-for-none", "tuple-for-list", "uuid-for-str", "datetime-for-str", "bigint"],
)
def test_out_of_domain_values_are_caught_in_old_content_too(old: Any, new: Any) -> None:
    """An in-place replacement inside an unchanged-looking run still takes the exact path."""
    items: list[Any] = [{"i": i, "text": f"item {i} " * 10} for i in range(3_000)]
    items[100] = old
    state = {"items": items}
    _, shadow, _ = encode(state)
    items[100] = new
    with pytest.raises(UnsupportedValueError) as info:
        encode(state, shadow)
    assert info.value.path == "state['items'][100]"


class Status(str, __import__("enum").Enum):
    DONE = "done"


def test_str_enum_replacing_its_value_is_caught() -> None:
    items: list[Any] = ["done"] + [f"x{i}" * 20 for i in range(3_000)]
    state = {"items": items}
    _, shadow, _ = encode(state)
    items[0] = Status.DONE
    with pytest.raises(UnsupportedValueError, match="Status"):
        encode(state, shadow)


def _blobs(n: int) -> list[bytes]:
    return [b"\x92\xa4item" + i.to_bytes(4, "little") + bytes(range(200)) for i in range(n)]


def test_appending_to_a_list_of_bytes_reuses_its_runs() -> None:
    state: dict[str, Any] = {"items": _blobs(2_000)}
    _, shadow, stored = encode(state)
    for step in range(5):
        state["items"] = [*state["items"], b"new " + bytes([step]) * 300]
        root, shadow, new = encode(state, shadow)
        assert len(new) <= 6, kinds(new)  # the tail run, the index path and the root
        assert root == encode({"items": list(state["items"])})[0]
        stored.update(new)
    assert Decoder(stored).build(root) == state


def test_an_edited_bytes_run_is_detected() -> None:
    items = _blobs(1_000)
    _, shadow, first = encode({"items": items})
    edited = list(items)
    edited[500] = edited[500][:-1] + b"X"  # same length, one byte differs
    root, _, new = encode({"items": edited}, shadow)
    assert root == encode({"items": edited})[0]
    assert Decoder({**first, **new}).build(root) == {"items": edited}
    # bytes and a str with the same characters stay apart
    mixed = [*items[:-1], items[-1].decode("latin-1")]
    assert encode({"items": mixed}, shadow)[0] == encode({"items": mixed})[0]
