"""The encoder: the value domain, canonical ids, and how states split into objects."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import math
import random
import statistics
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castate.codec import Decoder, Encoder, chunking
from castate.codec.encoder import BLOB_MIN, CHUNK_MIN, INLINE_MAX, MAX_DEPTH, REF_WEIGHT
from castate.codec.objects import KIND_CHUNK, KIND_CHUNKED, KIND_DICT, KIND_INDEX, KIND_LIST, KIND_STR
from castate.errors import UnsupportedValueError
from tests.strategies import apply_list_edit, elements, initial_list, list_edits, list_lengths, same


def encode(state: dict[str, Any], shadow: Any = None, default: Any = None) -> tuple[bytes, Any, dict[bytes, Any]]:
    enc = Encoder(default)
    root, new_shadow = enc.encode_root(state, shadow)
    return root, new_shadow, enc.objects


def kinds(objects: dict[bytes, Any]) -> list[int]:
    return sorted(kind for kind, _ in objects.values())


# -- the value domain ----------------------------------------------------------------------


class _OtherZone(datetime.tzinfo):
    """A tzinfo castate cannot keep exactly (only ZoneInfo and timezone are kept)."""

    def utcoffset(self, _dt: Any) -> datetime.timedelta:
        return datetime.timedelta(hours=1)


@dataclasses.dataclass
class _Point:
    x: int
    y: int


class _Color(enum.Enum):
    RED = 1


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
        ({"tags": {object()}}, "object", "state['tags'][0]"),  # a set's order of unsortable items is arbitrary
        ({"pair": (1, [2, bytearray(b"x")])}, "bytearray", "state['pair'][1][1]"),
        (
            {"a": {"when": datetime.datetime(2024, 1, 1, tzinfo=_OtherZone())}},
            "tzinfo _OtherZone",
            "state['a']['when']",
        ),
        ({"a": [1, {"ts": datetime.time(1, tzinfo=_OtherZone())}]}, "tzinfo _OtherZone", "state['a'][1]['ts']"),
        ({"d": decimal.Decimal("1" * 3000)}, "Decimal of 3000 characters", "state['d']"),
        ({"f": lambda: 1}, "function", "state['f']"),
        ({"p": _Point(1, 2)}, "_Point is not supported", "state['p']"),
        ({"e": [_Color.RED]}, "_Color is not supported", "state['e'][0]"),
        ({"m": {1: "a"}}, "key 1 is not a str", "state['m']"),
        ({"n": 2**64}, "64-bit", "state['n']"),
        ({"n": -(2**63) - 1}, "64-bit", "state['n']"),
        ({"s": "bad \udc80 text"}, "surrogate", "state['s']"),
        ({"k": {"bad \ud800": 1}}, "surrogate", "state['k']"),
        ({"b": bytearray(b"x")}, "bytearray", "state['b']"),
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
    """default= sees only values outside the domain; built-in typed values keep their type."""
    when = datetime.datetime(2024, 5, 1, 12, 0)
    state = {"when": when, "tags": {"b"}, "p": _Point(1, 2), "b": bytearray(b"x")}
    seen: list[type] = []

    def default(v: Any) -> Any:
        seen.append(type(v))
        return dataclasses.asdict(v) if dataclasses.is_dataclass(v) else bytes(v)

    root, _, objects = encode(state, default=default)
    assert Decoder(objects).build(root) == {"when": when, "tags": {"b"}, "p": {"x": 1, "y": 2}, "b": b"x"}
    assert seen == [_Point, bytearray]


def test_default_hook_errors_are_reported() -> None:
    def refuse(value: Any) -> Any:
        raise ValueError("no thanks")

    with pytest.raises(UnsupportedValueError, match="no thanks"):
        encode({"x": {1, object()}}, default=refuse)


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


def test_key_order_is_part_of_the_value() -> None:
    """A dict keeps its insertion order: the same items in another order are another value
    (``list(d)`` tells them apart), so they get another id; the same order, the same id."""
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert encode(a)[0] != encode(b)[0]
    assert encode(a)[0] == encode({"x": 1, "y": {"b": 2, "a": [1, 2]}})[0]
    assert encode({"d": {"b": 2, "a": 1}})[0] != encode({"d": {"a": 1, "b": 2}})[0]


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
        ({1, 2}, frozenset({1, 2})),
        ("00000000-0000-0000-0000-000000000001", uuid.UUID(int=1)),
        ("2024-01-01 00:00:00", datetime.datetime(2024, 1, 1)),
        (
            datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
            datetime.datetime(2024, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        ),
        (1, decimal.Decimal(1)),
        (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
    ],
    ids=["nan", "tuple", "frozenset", "uuid", "datetime", "same-instant-other-zone", "decimal", "decimal-exponent"],
)
def test_typed_lookalikes_replacing_old_content_are_saved(old: Any, new: Any) -> None:
    """A typed value that == the value it replaces (or looks like its JSON form) inside an
    unchanged-looking run is still a change: the incremental save equals a fresh one."""
    items: list[Any] = [{"i": i, "text": f"item {i} " * 10} for i in range(3_000)]
    items[100] = old
    state = {"items": items}
    before, shadow, _ = encode(state)
    items[100] = new
    root, _, objects = encode(state, shadow)
    assert root == encode(state)[0] != before
    back = Decoder({**objects, **encode(state)[2]}).build(root)["items"][100]
    assert type(back) is type(new)
    assert back == new or new != new
    if isinstance(new, datetime.datetime):
        assert back.tzinfo == new.tzinfo


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (1, 2**70),
        ({"x": 1, "y": 2}, _Point(1, 2)),
        (datetime.datetime(2024, 1, 1), datetime.datetime(2024, 1, 1, tzinfo=_OtherZone())),
        ((1, 2), (1, object())),
    ],
    ids=["bigint", "unregistered-dataclass", "other-tzinfo", "object-in-tuple"],
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
    assert info.value.path.startswith("state['items'][100]")


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


# -- realigning lists after trims, inserts and edits ------------------------------------------


def _message(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message number {i} " * 20, "i": i}


@given(list_lengths, st.integers(0, 2**32), list_edits)
@settings(max_examples=60, deadline=None)
def test_list_edits_encode_as_a_fresh_encoding_does(n: int, seed: int, edits: list[Any]) -> None:
    """Whatever the edits (front trims with appends, inserts, deletes, look-alike values, a new
    list object), the incremental root is the fresh root, and the objects decode to the state."""
    state: dict[str, Any] = {"log": initial_list(n, seed), "n": 0}
    _, shadow, known = encode(state)
    for edit in edits:
        apply_list_edit(state, "log", edit)
        root, shadow, new = encode(state, shadow)
        known.update(new)
        assert root == encode(copy.deepcopy(state))[0], edit[0]
        assert same(Decoder(known).build(root), state)


class Shade(enum.StrEnum):
    DARK = "dark"


OUT_OF_DOMAIN = [_Point(1, 2), (1, bytearray(b"x")), 2**70, bytearray(b"x"), Shade.DARK, {1: "x"}]


def _convert(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray) else repr(value)


@given(
    list_lengths,
    st.integers(0, 2**32),
    list_edits,
    st.sampled_from(OUT_OF_DOMAIN),
    st.sampled_from(["set", "insert", "append", "trim_set"]),
    st.floats(0, 1, exclude_max=True),
)
@settings(max_examples=40, deadline=None)
def test_out_of_domain_values_are_refused_after_any_edits(
    n: int, seed: int, edits: list[Any], bad: Any, how: str, where: float
) -> None:
    """An out-of-domain value where an old value was is refused with the path a fresh encoding
    names, and with ``default=`` converted the same way."""
    state: dict[str, Any] = {"log": initial_list(n, seed)}
    _, shadow, _ = encode(state)
    for edit in edits:
        apply_list_edit(state, "log", edit)
        _, shadow, _ = encode(state, shadow)
    lst = state["log"]
    if how == "trim_set" and len(lst) > 2:
        del lst[:2]
    if how == "append" or not lst:
        lst.append(bad)
    elif how == "insert":
        lst.insert(int(where * len(lst)), bad)
    else:
        lst[int(where * len(lst))] = bad
    with pytest.raises(UnsupportedValueError) as incremental:
        encode(state, shadow)
    with pytest.raises(UnsupportedValueError) as fresh:
        encode(copy.deepcopy(state))
    assert incremental.value.path == fresh.value.path
    # default= converts other types; big ints and non-str keys stay refused
    if type(bad) in (tuple, _Point, bytearray, Shade):
        assert encode(state, shadow, default=_convert)[0] == encode(copy.deepcopy(state), default=_convert)[0]


def test_a_long_list_cut_down_to_a_converted_value_is_inline_as_fresh() -> None:
    """A value that only ``default=`` brings into the domain may make a once-long list small
    enough to sit inline: the incremental encoding must notice, as the fresh one does."""
    state: dict[str, Any] = {"log": [_message(i) for i in range(3)]}
    _, shadow, _ = encode(state, default=_convert)
    del state["log"][:2]
    state["log"][0] = (1, 2)
    root, _, _ = encode(state, shadow, default=_convert)
    assert root == encode(copy.deepcopy(state), default=_convert)[0]
    assert kinds(encode(state, shadow, default=_convert)[2]) == [KIND_DICT]  # the root, with the list inline


@pytest.mark.parametrize("how", ["del", "pop", "slice", "rebind", "rebuilt"])
def test_a_sliding_window_encodes_only_what_changed(how: str) -> None:
    """A 300-message window trimmed by one and appended by one: each save encodes the root's one
    key and the new message; a run is encoded again only when the trim reaches it."""
    state: dict[str, Any] = {"messages": [_message(i) for i in range(300)]}

    def trim() -> None:
        lst = state["messages"]
        if how == "del":
            del lst[0]
        elif how == "pop":
            lst.pop(0)
        elif how == "slice":
            lst[:1] = []
        elif how == "rebind":  # a new list object each time: found again by its elements' identities
            state["messages"] = lst[1:]
        else:  # new, equal element objects each time (state rebuilt from data): found by equality
            state["messages"] = [dict(m) for m in lst[1:]]

    steps = 300
    _, shadow, _ = encode(state)
    work = []
    for step in range(steps):
        trim()
        state["messages"].append(_message(10_000 + step))
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        work.append((enc.encoded, len(enc.objects)))
        assert root == encode(copy.deepcopy(state))[0]
    encoded = [e for e, _ in work]
    assert statistics.median(encoded) == 2  # the root's key and the new message
    # Re-encoding the window would walk 300 elements per save; here each element is encoded
    # when it comes and once or twice more when the trim reaches its run.
    assert sum(encoded) <= 6 * steps
    # new objects: the message, the trimmed first run, the tail run, the index and the root
    assert statistics.median(n for _, n in work) <= 6


def test_a_trim_with_an_edit_in_the_middle_encodes_the_edited_run_only() -> None:
    lst = [_message(i) for i in range(2_000)]
    state = {"messages": lst}
    _, shadow, known = encode(state)
    for step in range(40):
        del lst[:3]
        lst[1_000] = _message(-step)
        lst.append(_message(5_000 + step))
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        known.update(enc.objects)
        assert root == encode(copy.deepcopy(state))[0]
        # the new message, the edited element's run (at most RUN_MAX / 40 refs) and the
        # trimmed run's neighbours, not the 2,000 elements
        assert enc.encoded <= 1 + 2 * (chunking.RUN_MAX // REF_WEIGHT), enc.encoded
    assert same(Decoder(known).build(root), state)


def test_an_insert_near_the_front_and_appends_keep_the_runs_after_it() -> None:
    lst = [_message(i) for i in range(1_500)]
    state = {"messages": lst}
    _, shadow, _ = encode(state)
    lst.insert(3, _message(-1))
    lst.extend(_message(9_000 + i) for i in range(4))
    enc = Encoder()
    root, shadow = enc.encode_root(state, shadow)
    assert root == encode(copy.deepcopy(state))[0]
    assert enc.encoded <= 1 + 4 + 2 * (chunking.RUN_MAX // REF_WEIGHT)


def test_lookalike_values_are_not_taken_for_the_old_ones() -> None:
    """1, 1.0 and True are equal in Python and the same object may be reused; digests tell them apart."""
    items: list[Any] = [i % 3 == 0 for i in range(3_000)] + [1] * 500
    state = {"items": items}
    _, shadow, known = encode(state)
    for swap in ([1.0], [True], [1], [0.0], [-0.0]):
        del items[:7]
        items[1_000] = swap[0]
        items.extend(swap * 3)
        root, shadow, new = encode(state, shadow)
        known.update(new)
        assert root == encode(copy.deepcopy(state))[0]
        assert same(Decoder(known).build(root), state)


# -- big dicts: keys removed and added -----------------------------------------------------


def _largest_run(shadow: Any, key: str) -> int:
    """The most keys in one run of the big dict ``state[key]`` (read from the encoder's shadow)."""
    return max(run.count for run in shadow.children[key].runs)


def test_removing_old_keys_from_a_big_dict_encodes_the_runs_around_them() -> None:
    """A cache keyed by id that loses its oldest entry and a random one, gains one and updates
    one per save re-encodes the runs of keys around those four places, not the 10,000 keys."""
    rng = random.Random(3)
    cache: dict[str, dict[str, Any]] = {
        f"call-{i:06d}": {"msg_id": f"m{i}", "bytes": i * 7, "hits": 0} for i in range(10_000)
    }
    state: dict[str, Any] = {"cache": cache, "step": 0}
    _, shadow, known = encode(state)
    nxt = len(cache)
    for step in range(20):
        del cache[min(cache)]  # the oldest id
        del cache[rng.choice(list(cache))]
        cache[f"call-{nxt:06d}"] = {"msg_id": f"m{nxt}", "bytes": 1, "hits": 0}
        cache[rng.choice(list(cache))]["hits"] += 1
        nxt += 1
        state["step"] = step
        largest = _largest_run(shadow, "cache")
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        known.update(enc.objects)
        # the root's two keys, then per changed place its run and maybe the next one that a
        # re-cut pulls in before a cut lands on an old run's first key again
        assert enc.encoded <= 2 + 8 * largest < len(cache) / 2, enc.encoded
        if step % 5 == 4:
            assert root == encode(copy.deepcopy(state))[0]
    assert same(Decoder(known).build(root), state)


dict_edits = st.lists(
    st.tuples(
        st.sampled_from(["drop", "drop_oldest", "add", "set", "lookalike"]), st.floats(0, 1, exclude_max=True), elements
    ),
    min_size=1,
    max_size=15,
)


@given(st.integers(0, 1_500), dict_edits)
@settings(max_examples=50, deadline=None)
def test_big_dict_edits_encode_as_a_fresh_encoding_does(n: int, edits: list[Any]) -> None:
    cache: dict[str, Any] = {f"id-{i:05d}": {"n": i, "text": "t" * (i % 50)} for i in range(n)}
    state: dict[str, Any] = {"cache": cache}
    _, shadow, known = encode(state)
    added = n
    for op, where, value in edits:
        keys = sorted(cache)
        if op == "drop" and keys:
            del cache[keys[int(where * len(keys))]]
        elif op == "drop_oldest" and keys:
            del cache[keys[0]]
        elif op == "set" and keys:
            cache[keys[int(where * len(keys))]] = value
        elif op == "lookalike" and keys:
            cache[keys[int(where * len(keys))]] = [1, 1.0, True, 0, 0.0, -0.0, False][added % 7]
        else:
            cache[f"id-{added:05d}" if where < 0.5 else f"x{where}"] = value
        added += 1
        root, shadow, new = encode(state, shadow)
        known.update(new)
        assert root == encode(copy.deepcopy(state))[0], op
        assert same(Decoder(known).build(root), state)


def test_a_big_dict_that_shrinks_to_one_node_is_encoded_exactly() -> None:
    cache = {f"k{i:05d}": "v" * 40 for i in range(1_000)}
    state: dict[str, Any] = {"cache": cache}
    _, shadow, _ = encode(state)
    for size in (600, 200, 20, 5, 300, 1_000):
        state["cache"] = {k: v for k, v in cache.items() if int(k[1:]) < size}
        root, shadow, _ = encode(state, shadow)
        assert root == encode(copy.deepcopy(state))[0]


def test_an_unchanged_big_dict_writes_nothing() -> None:
    state = {"cache": {f"k{i:05d}": {"n": i} for i in range(3_000)}}
    root, shadow, _ = encode(state)
    root2, _, new = encode(copy.deepcopy(state), shadow)
    assert root2 == root
    assert new == {}


def _index_group_end(n_min: int) -> tuple[dict[str, Any], Any, int]:
    """A state with one long list whose index's bottom level has a group closed by a cut, the
    shadow of its save, and how many elements the groups before that cut hold."""
    for n in range(n_min, 20000, 7):
        state = {"l": [{"a": i, "b": "x"} for i in range(n)]}
        _, shadow = Encoder().encode_root(state, None)
        runs = shadow.children["l"].runs
        levels = shadow.children["l"].levels
        if levels and len(runs) in levels[0][0]:
            return state, shadow, n
    raise AssertionError("no such list")  # pragma: no cover


def test_an_unchanged_list_whose_last_index_group_ends_at_a_cut_keeps_its_root() -> None:
    """Found by differential fuzzing: every run unchanged but the digest path taken (an element
    replaced by an equal new dict) made an empty index group."""
    state, shadow, _ = _index_group_end(400)
    root, _ = Encoder().encode_root(state, None)
    state["l"][0] = {"a": 0, "b": "x"}
    again, _ = Encoder().encode_root(state, shadow)
    assert again == root == Encoder().encode_root(state, None)[0]
    # The same items in another key order are another value: the incremental save sees it.
    state["l"][0] = {"b": "x", "a": 0}
    reordered, _ = Encoder().encode_root(state, shadow)
    assert reordered == Encoder().encode_root(state, None)[0] != root


def test_truncating_a_list_at_an_index_group_boundary_matches_a_fresh_encoding() -> None:
    import itertools

    for n in range(3000, 20000, 101):
        state = {"l": [{"a": i, "b": "x"} for i in range(n)]}
        _, shadow = Encoder().encode_root(state, None)
        ls = shadow.children["l"]
        ends = [e for e in ls.levels[0][0] if e < len(ls.runs)] if ls.levels else []
        if ends:
            starts = [0, *itertools.accumulate(r.count for r in ls.runs[:-1])]
            del state["l"][starts[ends[0]] :]
            assert Encoder().encode_root(state, shadow)[0] == Encoder().encode_root(state, None)[0]
            return
    raise AssertionError("no list with an index group boundary")  # pragma: no cover
