"""Format 2: dict key order, built-in typed values and registered user types, exact both ways."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import ormsgpack
import pydantic
import pytest
from hypothesis import given, settings

import castate
from castate.codec import Decoder, Encoder
from castate.codec.encoder import array_header, map_header
from castate.codec.nodes import NO_SPECIALS, encode_typed
from castate.codec.objects import KIND_DICT, KIND_LIST, KIND_TYPED, decode_frame, encode_frame, object_id
from castate.codec.tracking import tracked
from castate.codec.types import EXT_DATE, EXT_DATETIME, EXT_TUPLE, EXT_USER, unregister
from castate.errors import CorruptObjectError, RegistrationError, UnregisteredTypeError, UnsupportedValueError
from tests.strategies import same, typed_states


def roundtrip(state: dict[str, Any], shadow: Any = None) -> Any:
    enc = Encoder()
    root, _ = enc.encode_root(state, shadow)
    return Decoder(dict(enc.objects)).build(root)


def encode(state: dict[str, Any]) -> tuple[bytes, dict[bytes, tuple[int, bytes]]]:
    enc = Encoder()
    root, _ = enc.encode_root(state, None)
    return root, enc.objects


# -- key order ------------------------------------------------------------------------------------


def test_key_order_round_trips_at_every_size() -> None:
    """Inline dicts, dict nodes and big dicts cut into runs all come back in insertion order."""
    big = {f"k{(i * 7919) % 5000:05d}": {"n": i, "text": f"value {i} " * 3} for i in range(5000)}
    state = {"z": 1, "a": {"y": 1, "b": 2}, "node": {f"{c}": "x" * 100 for c in "zyxwvu"}, "big": big}
    back = roundtrip(state)
    assert same(back, state)
    assert list(back["big"]) == list(big) != sorted(big)


def test_a_reordered_big_dict_is_saved_incrementally_as_a_fresh_save_would() -> None:
    big = {f"url-{(i * 37) % 997}": {"hits": i} for i in range(997)}
    state: dict[str, Any] = {"cache": big}
    enc = Encoder()
    _, shadow = enc.encode_root(state, None)
    known = dict(enc.objects)
    for step in range(4):
        if step == 0:
            state["cache"][f"new-{step}"] = {"hits": -1}  # an insert at the end
        elif step == 1:
            state["cache"] = dict(reversed(state["cache"].items()))  # the same items, reversed
        elif step == 2:
            moved = state["cache"].pop("url-0")
            state["cache"]["url-0"] = moved  # one key moved to the end
        else:
            del state["cache"]["url-37"]
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        known.update(enc.objects)
        assert root == Encoder().encode_root(copy.deepcopy(state), None)[0]
        assert same(Decoder(known).build(root), state)


def test_appending_keys_to_a_big_dict_rewrites_only_its_end() -> None:
    """Runs follow insertion order, so new keys land in the last run (a cache keyed by URL)."""
    state: dict[str, Any] = {"cache": {f"https://example.org/{i * 7919 % 3001}": {"n": i} for i in range(3000)}}
    enc = Encoder()
    _, shadow = enc.encode_root(state, None)
    state["cache"]["https://example.org/aaa"] = {"n": -1}
    enc = Encoder()
    enc.encode_root(state, shadow)
    assert len(enc.objects) <= 6  # the last run, the index path above it, the root


def test_tracked_dicts_keep_their_order() -> None:
    state = tracked({"b": 1, "a": {"d": 1, "c": 2}})
    _, shadow = Encoder().encode_root(state, None)
    state["a"]["0"] = 3
    enc = Encoder()
    root, _ = enc.encode_root(state, shadow)
    assert list(Decoder({**enc.objects, **encode(state)[1]}).build(root)["a"]) == ["d", "c", "0"]


@given(typed_states)
@settings(max_examples=80, deadline=None)
def test_the_extended_domain_round_trips_exactly(state: dict[str, Any]) -> None:
    """Every typed value, at any depth, with its type, zone, fold, digits and key order."""
    assert same(roundtrip(state), state)
    again, _ = encode(copy.deepcopy(state))
    assert again == encode(state)[0]  # equal values, equal ids


# -- built-in typed values ------------------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")
BUILTINS: list[Any] = [
    dt.datetime(2026, 12, 5, 2, 10, 23, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 5, 2, 10, 23, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30), "EST-ish")),
    dt.datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1),  # the second 02:30 of the night
    dt.datetime(1, 1, 1),
    dt.date(2026, 12, 5),
    dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=14))),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("-0.000"),
    decimal.Decimal("1E+3"),
    decimal.Decimal("sNaN123"),
    (1, (2.0, "x"), [True]),
    {3, "a", b"b", (1, 2), frozenset({1})},
    frozenset(),
    float("inf"),
    float("-inf"),
]


@pytest.mark.parametrize("value", BUILTINS, ids=lambda v: type(v).__name__)
def test_builtin_typed_values_keep_their_type(value: Any) -> None:
    back = roundtrip({"v": value, "big": (value, "x" * 3000)})  # inline, and inside a T object
    assert same(back["v"], value)
    assert same(back["big"][0], value)


def test_nan_is_stored_as_one_canonical_nan() -> None:
    import struct

    other_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_DEAD_BEEF))[0]
    assert encode({"x": float("nan")})[0] == encode({"x": other_nan})[0]
    assert roundtrip({"x": other_nan})["x"] != roundtrip({"x": other_nan})["x"]  # still a NaN


def test_equal_sets_get_equal_ids_whatever_their_iteration_order() -> None:
    a = {f"item-{i}" for i in range(300)}
    b = set(sorted(a, reverse=True))
    assert encode({"s": a})[0] == encode({"s": b})[0]
    assert encode({"s": frozenset(a)})[0] != encode({"s": a})[0]  # the type is part of the value
    assert encode({"t": (1, 2)})[0] != encode({"t": [1, 2]})[0]


def test_an_aware_datetime_keeps_its_zone_even_when_equal_to_another() -> None:
    utc = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    paris = utc.astimezone(PARIS)
    assert utc == paris
    assert encode({"t": utc})[0] != encode({"t": paris})[0]
    assert roundtrip({"t": paris})["t"].tzinfo is PARIS


def test_a_zoneinfo_made_from_a_file_is_refused() -> None:
    with open("/usr/share/zoneinfo/UTC", "rb") as f:
        zone = ZoneInfo.from_file(f)
    with pytest.raises(UnsupportedValueError, match="ZoneInfo without a key") as info:
        encode({"a": [dt.datetime(2026, 1, 1, tzinfo=zone)]})
    assert info.value.path == "state['a'][0]"


def test_a_mutated_set_inside_a_tracked_state_is_saved() -> None:
    """Tracked containers skip unchanged subtrees by version; a set or dataclass mutated in
    place does not bump it, so a container that holds one is never skipped."""
    state = tracked({"meta": {"tags": {"a"}, "point": _Point(1, [2])}, "log": [{"seen": {"x"}}] * 300})
    castate.register(_Point, name="test.point")
    try:
        _, shadow = Encoder().encode_root(state, None)
        state["meta"]["tags"].add("b")
        state["meta"]["point"].y.append(3)
        state["log"][0]["seen"].add("y")  # the same dict sits at every index
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        assert root == Encoder().encode_root(copy.deepcopy(state), None)[0]
        back = Decoder({**enc.objects, **encode(state)[1]}).build(root)
        assert back["meta"]["tags"] == {"a", "b"}
        assert back["meta"]["point"].y == [2, 3]
        assert back["log"][299]["seen"] == {"x", "y"}
    finally:
        unregister("test.point")


# -- corruption: a tag that does not match its body -----------------------------------------------


def _node_with(body_value: bytes) -> tuple[bytes, dict[bytes, tuple[int, bytes]]]:
    """A root dict node ``{"v": <the given MessagePack>}``."""
    content = NO_SPECIALS + map_header(1) + ormsgpack.packb("v") + body_value
    oid = object_id(KIND_DICT, content)
    return oid, {oid: (KIND_DICT, content)}


@pytest.mark.parametrize(
    ("code", "body", "reason"),
    [
        (EXT_DATE, ormsgpack.packb([2026, 12, 5, 1, 2, 3, 0, 0, None]), "bad fields"),  # a datetime body under date
        (EXT_DATETIME, ormsgpack.packb([2026, 13, 5, 1, 2, 3, 0, 0, None]), "month must be in 1..12"),
        (EXT_DATETIME, ormsgpack.packb([2026, 12, 5, 1, 2, 3, 0, 0, "No/Such_Zone"]), "not known here"),
        (EXT_DATETIME, ormsgpack.packb([2026, 12, 5, 1, 2, 3, 0, 0, [0, "x", 1]]), "bad time zone"),
        (5, b"\x00" * 15, "UUID"),  # 15 bytes
        (6, b"1.50x", "Decimal"),
        (6, b"1.5E+1", "not canonical"),  # Decimal("1.5E+1") prints as 15
        (EXT_TUPLE, ormsgpack.packb({"a": 1}), "tuple whose body is not a list"),
        (8, ormsgpack.packb([1, 1]), "set holding a value twice"),
        (8, ormsgpack.packb([[1]]), "unhashable"),
        (EXT_USER, ormsgpack.packb(["name"]), "registered-type body"),
        (99, b"", "unknown ext type 99"),
    ],
)
def test_a_typed_value_whose_body_does_not_match_its_tag_is_corruption(code: int, body: bytes, reason: str) -> None:
    oid, objects = _node_with(ormsgpack.packb(ormsgpack.Ext(code, body)))
    with pytest.raises(CorruptObjectError, match=reason) as info:
        Decoder(objects).build(oid)
    assert oid.hex() in str(info.value)


def test_a_typed_object_around_the_wrong_inner_value_is_corruption() -> None:
    inner_content = NO_SPECIALS + map_header(0)
    inner = object_id(KIND_DICT, inner_content)
    typed = encode_typed(EXT_TUPLE, inner, None)
    tid = object_id(KIND_TYPED, typed)
    root_content = (
        len([0]).to_bytes(4, "little") + (0).to_bytes(4, "little") + tid + array_header(1) + b"\xc0"
    )  # a list node [<ref>]
    rid = object_id(KIND_LIST, root_content)
    objects = {inner: (KIND_DICT, inner_content), tid: (KIND_TYPED, typed), rid: (KIND_LIST, root_content)}
    with pytest.raises(CorruptObjectError, match="tuple whose body is not a list") as info:
        Decoder(objects).build(rid)
    assert tid.hex() in str(info.value)


# -- format versions ----------------------------------------------------------------------------


def test_version_1_frames_are_read_and_version_2_is_written() -> None:
    """A version-1 object (sorted keys, no typed values) means the same under version 2."""
    content = NO_SPECIALS + map_header(2) + ormsgpack.packb("a") + b"\x01" + ormsgpack.packb("b") + b"\x02"
    oid = object_id(KIND_DICT, content)
    v1 = bytes((1, KIND_DICT, 0)) + content
    kind, got = decode_frame(oid, v1)
    assert Decoder({oid: (kind, got)}).build(oid) == {"a": 1, "b": 2}
    assert encode_frame(KIND_DICT, content)[0] == 2
    with pytest.raises(castate.UnsupportedFormatError):
        decode_frame(oid, bytes((3, KIND_DICT, 0)) + content)


# -- the registry -------------------------------------------------------------------------------


class _Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class _Point:
    x: int
    y: Any


@dataclasses.dataclass(frozen=True)
class _Frozen:
    a: int
    b: int = dataclasses.field(init=False, default=0)


class _ToolCall(pydantic.BaseModel):
    name: str
    args: dict[str, Any]


class _Message(pydantic.BaseModel):
    role: str
    content: str
    sent: dt.datetime
    calls: list[_ToolCall] = []


class _Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Money) and (self.cents, self.currency) == (other.cents, other.currency)

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def registry() -> Iterator[None]:
    names = {
        "test.color": _Color,
        "test.level": _Level,
        "test.point": _Point,
        "test.frozen": _Frozen,
        "test.toolcall": _ToolCall,
        "test.message": _Message,
    }
    for name, cls in names.items():
        castate.register(cls, name=name)
    castate.register(
        _Money,
        name="test.money",
        to_state=lambda m: [m.cents, m.currency],
        from_state=lambda s: _Money(s[0], s[1]),
    )
    yield
    for name in [*names, "test.money"]:
        unregister(name)


def _message(i: int) -> _Message:
    return _Message(
        role="assistant",
        content=f"message {i} " * 40,
        sent=dt.datetime(2026, 12, 5, 2, i % 60, tzinfo=dt.UTC),
        calls=[_ToolCall(name="search", args={"q": f"q{i}", "k": 3})],
    )


def test_registered_types_round_trip(registry: None) -> None:
    frozen = _Frozen(1)
    object.__setattr__(frozen, "b", 7)
    state = {
        "color": _Color.BLUE,
        "levels": [_Level.LOW, 1],
        "point": _Point(1, {"nested": _Point(2, (3, 4))}),
        "frozen": frozen,
        "messages": [_message(i) for i in range(3)],
        "price": _Money(1999, "EUR"),
    }
    back = roundtrip(state)
    assert back == state
    assert type(back["levels"][0]) is _Level
    assert type(back["levels"][1]) is int
    assert back["frozen"].b == 7
    assert type(back["messages"][0].calls[0]) is _ToolCall


def test_a_model_repeated_across_saves_dedups_like_a_dict(registry: None) -> None:
    state: dict[str, Any] = {"messages": [_message(i) for i in range(50)]}
    _, first = encode(state)
    state["messages"].append(_message(50))
    root, second = encode(state)
    assert len(set(second) - set(first)) <= 6  # the new message, its list run, the root
    assert Decoder({**first, **second}).build(root) == state


def test_registration_errors() -> None:
    for name in ("tuple", "datetime", "castate.anything", "Decimal", "", "x" * 300):
        with pytest.raises(RegistrationError):
            castate.register(_Color, name=name)
    castate.register(_Color, name="test.color")
    try:
        with pytest.raises(RegistrationError, match="taken"):
            castate.register(_Level, name="test.color")
        with pytest.raises(RegistrationError, match="registered already"):
            castate.register(_Color, name="test.color2")
        with pytest.raises(RegistrationError, match="not an Enum, a dataclass or a pydantic model"):
            castate.register(_Money, name="test.money")
        with pytest.raises(RegistrationError, match="both"):
            castate.register(_Money, name="test.money", to_state=lambda m: m.cents)
        with pytest.raises(RegistrationError, match="built into"):
            castate.register(dt.datetime, name="test.dt", to_state=str, from_state=str)
    finally:
        unregister("test.color")


def test_an_unregistered_type_is_refused_on_save_naming_its_path() -> None:
    with pytest.raises(UnsupportedValueError, match="_Point is not supported") as info:
        encode({"a": [{"p": _Point(1, 2)}]})
    assert info.value.path == "state['a'][0]['p']"


def test_an_unregistered_name_on_read_names_the_type_and_path(registry: None) -> None:
    state = {"a": [1, {"inline": _Point(1, 2), "big": _Point(1, "x" * 5000)}]}
    root, objects = encode(state)
    unregister("test.point")
    try:
        with pytest.raises(UnregisteredTypeError) as info:
            Decoder(objects).build(root)
        assert info.value.name == "test.point"
        assert info.value.path == "state['a'][1]['inline']"
        assert "test.point" in str(info.value)
        assert "unregistered_as_dicts" in str(info.value)
        with castate.unregistered_as_dicts():
            back = Decoder(objects).build(root)
        assert back["a"][1]["big"] == {"__castate_type__": "test.point", "value": {"x": 1, "y": "x" * 5000}}
    finally:
        castate.register(_Point, name="test.point")


def test_a_from_state_that_refuses_is_a_clear_error(registry: None) -> None:
    root, objects = encode({"c": _Color.RED})
    unregister("test.color")

    class Other(enum.Enum):  # the "same" enum, its member removed
        BLUE = "blue"

    castate.register(Other, name="test.color")
    try:
        with pytest.raises(UnregisteredTypeError, match="could not be rebuilt") as info:
            Decoder(objects).build(root)
        assert info.value.path == "state['c']"
    finally:
        unregister("test.color")
        castate.register(_Color, name="test.color")


def test_reading_never_imports_a_stored_name(registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name such as "os.system" in stored data is only looked up in the registry."""
    import builtins
    import importlib

    imported: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def spy_import(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import(name, *args, **kwargs)

    def spy_import_module(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import_module(name, *args, **kwargs)

    body = array_header(2) + ormsgpack.packb("os.system") + ormsgpack.packb(["echo pwned"])
    oid, objects = _node_with(ormsgpack.packb(ormsgpack.Ext(EXT_USER, body)))
    monkeypatch.setattr(importlib, "import_module", spy_import_module)
    monkeypatch.setattr(builtins, "__import__", spy_import)
    with pytest.raises(UnregisteredTypeError, match=r"'os\.system' is not registered"):
        Decoder(objects).build(oid)
    with castate.unregistered_as_dicts():
        assert Decoder(objects).build(oid) == {"v": {"__castate_type__": "os.system", "value": ["echo pwned"]}}
    monkeypatch.undo()
    assert not [name for name in imported if name.startswith("os")]
