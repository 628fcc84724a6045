"""numpy arrays in states (only when numpy is installed): dtype, shape and data, exact."""

from __future__ import annotations

from typing import Any

import ormsgpack
import pytest

from castate.codec import Decoder, Encoder
from castate.codec.encoder import map_header
from castate.codec.nodes import NO_SPECIALS
from castate.codec.objects import KIND_DICT, object_id
from castate.codec.tracking import tracked
from castate.codec.types import EXT_NDARRAY
from castate.errors import CorruptObjectError, UnsupportedValueError

np = pytest.importorskip("numpy")


def encode(state: dict[str, Any], shadow: Any = None) -> tuple[bytes, Any, dict[bytes, Any]]:
    enc = Encoder()
    root, new = enc.encode_root(state, shadow)
    return root, new, enc.objects


def roundtrip(state: dict[str, Any]) -> Any:
    root, _, objects = encode(state)
    return Decoder(objects).build(root)


ARRAYS = [
    np.arange(12, dtype=np.int64).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),  # stored in C order
    np.array(3.5),  # 0-d
    np.zeros((0, 5), dtype=np.uint8),
    np.array([True, False]),
    np.arange(6, dtype=">i4"),  # big-endian stays big-endian
    np.array([1 + 2j, np.nan], dtype=np.complex128),
    np.array(["2026-12-05T02:10", "NaT"], dtype="datetime64[ns]"),
    np.array(["ab", "cdé"], dtype="U3"),
    np.array([b"x", b"yz"], dtype="S2"),
    np.random.default_rng(0).random((300, 40)),  # 96 KB: content-defined chunks
]


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_arrays_round_trip_with_dtype_and_shape(arr: Any) -> None:
    back = roundtrip({"a": arr, "in": [arr]})["a"]
    assert type(back) is np.ndarray
    assert back.dtype == arr.dtype
    assert back.dtype.str == arr.dtype.str
    assert back.shape == arr.shape
    assert back.tobytes() == np.ascontiguousarray(arr).tobytes()  # NaN and NaT included
    assert back.flags.writeable
    assert encode({"a": arr.copy()})[0] == encode({"a": arr})[0]  # equal arrays, equal ids


def test_an_appended_row_does_not_rewrite_the_array() -> None:
    rows = np.random.default_rng(1).random((2000, 16))  # 256 KB
    state: dict[str, Any] = {"embeddings": rows}
    _, shadow, first = encode(state)
    state["embeddings"] = np.vstack([rows, np.ones((1, 16))])
    root, _, second = encode(state, shadow)
    new_bytes = sum(len(c) for oid, (_, c) in second.items() if oid not in first)
    assert new_bytes < 40_000  # the last chunk or two and the chunk list, not 256 KB
    assert np.array_equal(Decoder({**first, **second}).build(root)["embeddings"], state["embeddings"])


def test_dtypes_castate_cannot_keep_are_refused_with_their_path() -> None:
    with pytest.raises(UnsupportedValueError, match="dtype object") as info:
        encode({"x": [np.array([{"a": 1}], dtype=object)]})
    assert info.value.path == "state['x'][0]"
    with pytest.raises(UnsupportedValueError, match="numpy dtype"):
        encode({"x": np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])})


def test_an_array_mutated_in_place_inside_a_tracked_state_is_saved() -> None:
    state = tracked({"model": {"weights": np.zeros(4)}})
    _, shadow, first = encode(state)
    state["model"]["weights"][2] = 7.0
    root, _, second = encode(state, shadow)
    assert Decoder({**first, **second}).build(root)["model"]["weights"][2] == 7.0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (["|O", [1], b"\x00" * 8], "dtype"),
        (["<f8", [2], b"\x00" * 8], "ndarray data of 8 bytes"),
        (["<f8", [-1], b""], "bad ndarray body"),
        (["not a dtype", [1], b"\x00"], "dtype"),
        (["float64", [1], b"\x00" * 8], "dtype"),  # not the canonical dtype string "<f8"
    ],
)
def test_an_array_body_that_does_not_fit_its_tag_is_corruption(body: list[Any], reason: str) -> None:
    content = (
        NO_SPECIALS
        + map_header(1)
        + ormsgpack.packb("v")
        + ormsgpack.packb(ormsgpack.Ext(EXT_NDARRAY, ormsgpack.packb(body)))
    )
    oid = object_id(KIND_DICT, content)
    with pytest.raises(CorruptObjectError, match=reason):
        Decoder({oid: (KIND_DICT, content)}).build(oid)
