"""Decoding: malformed node contents raise castate's own errors, never a crash."""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any

import ormsgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castate.codec import Decoder, Encoder, child_ids
from castate.codec.encoder import MAX_DEPTH
from castate.codec.nodes import (
    TAG_REF,
    Commit,
    encode_commit,
    encode_index,
    encode_node,
    parse_chunked,
    parse_commit,
    parse_index,
    parse_node,
)
from castate.codec.objects import (
    KIND_BYTES,
    KIND_CHUNKED,
    KIND_COMMIT,
    KIND_DICT,
    KIND_INDEX,
    KIND_LIST,
    KIND_STR,
    decode_frame,
    encode_frame,
    object_id,
)
from castate.errors import CastateError, CorruptObjectError, MissingObjectError

KINDS = [KIND_STR, KIND_BYTES, KIND_CHUNKED, KIND_DICT, KIND_LIST, KIND_INDEX]


def decode_one(kind: int, content: bytes) -> Any:
    oid = object_id(kind, content)
    return Decoder({oid: (kind, content)}).build(oid)


@given(st.sampled_from(KINDS), st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_random_bytes_raise_only_castate_errors(kind: int, content: bytes) -> None:
    try:
        child_ids(object_id(kind, content), kind, content)
        decode_one(kind, content)
    except CastateError:
        pass


def _valid_contents() -> list[tuple[int, bytes]]:
    enc = Encoder()
    enc.encode_root(
        {"a": [1, {"b": b"\x00" * 10, "c": "x" * 5000}], "l": list(range(3000)), "d": {str(i): i for i in range(900)}},
        None,
    )
    return sorted(enc.objects.values())


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_valid_nodes_raise_only_castate_errors(data: st.DataObject) -> None:
    kind, content = data.draw(st.sampled_from(_valid_contents()))
    buf = bytearray(content)
    for _ in range(data.draw(st.integers(1, 4))):
        if not buf:
            break
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    mutated = bytes(buf)
    oid = object_id(kind, mutated)
    try:
        kids = child_ids(oid, kind, mutated)
        Decoder({oid: (kind, mutated), **{k: (KIND_STR, b"") for k in kids}}).build(oid)
    except CastateError:
        pass


def test_parsers_reject_malformed_input() -> None:
    oid = b"\x00" * 32
    with pytest.raises(CorruptObjectError):
        parse_node(oid, KIND_DICT, b"\x01\x00")
    with pytest.raises(CorruptObjectError):
        parse_node(oid, KIND_DICT, encode_node([], b"\x92\x01\x02"))  # a list body in a dict node
    with pytest.raises(CorruptObjectError):
        parse_node(oid, KIND_LIST, encode_node([(5, 0x72, b"\x01" * 32)], b"\x91\xc0"))
    with pytest.raises(CorruptObjectError):
        parse_node(oid, KIND_LIST, encode_node([(0, 0x72, b"\x01" * 32), (0, 0x72, b"\x01" * 32)], b"\x91\xc0"))
    with pytest.raises(CorruptObjectError):
        parse_node(oid, KIND_LIST, encode_node([], b"\xc1"))  # never-used msgpack byte
    with pytest.raises(CorruptObjectError):
        parse_index(oid, b"\x00" + b"\x01" * 39)
    with pytest.raises(CorruptObjectError):
        parse_index(oid, b"\x07" + encode_index(0, [(b"\x01" * 32, 1)])[1:])
    with pytest.raises(CorruptObjectError):
        parse_chunked(oid, b"\x53" + b"\x00" * 7)
    with pytest.raises(CorruptObjectError):
        parse_commit(oid, b"\x00" * 36 + b"{}")


def test_index_children_must_have_the_counts_they_claim() -> None:
    enc = Encoder()
    leaf = enc._list_node([(0, b"1"), (0, b"2")])  # a two-element run
    bad = encode_index(0, [(leaf, 3), (leaf, 2)])
    oid = object_id(KIND_INDEX, bad)
    with pytest.raises(CorruptObjectError, match="3-element"):
        Decoder({oid: (KIND_INDEX, bad), **enc.objects}).build(oid)


def test_a_missing_child_is_named() -> None:
    enc = Encoder()
    root, _ = enc.encode_root({"doc": "x" * 10_000}, None)
    contents = dict(enc.objects)
    blob = next(k for k, (kind, _) in contents.items() if kind == KIND_STR)
    del contents[blob]
    with pytest.raises(MissingObjectError, match=blob.hex()):
        Decoder(contents).build(root)


def test_a_commit_is_not_a_value() -> None:
    content = encode_commit(Commit(root=b"\x00" * 32, parents=(), session=None, time_ns=1))
    oid = object_id(KIND_COMMIT, content)
    assert parse_commit(oid, content).time_ns == 1
    with pytest.raises(CorruptObjectError, match="where a value belongs"):
        Decoder({oid: (KIND_COMMIT, content)}).build(oid)


def deep_chain(levels: int) -> tuple[bytes, dict[bytes, tuple[int, bytes]]]:
    """A dict node pointing at a dict node ... ``levels`` deep (objects castate would not write past 200)."""
    content = encode_node([], ormsgpack.packb({"leaf": 1}))
    oid = object_id(KIND_DICT, content)
    objects = {oid: (KIND_DICT, content)}
    for _ in range(levels):
        content = encode_node([(0, TAG_REF, oid)], ormsgpack.packb({"next": None}))
        oid = object_id(KIND_DICT, content)
        objects[oid] = (KIND_DICT, content)
    return oid, objects


def test_a_tree_at_the_nesting_limit_needs_no_deep_python_stack() -> None:
    """A state the encoder accepts must load: recursing per object used to raise RecursionError
    on a legal state (198 levels of 3,000-key dicts: index nodes under every level)."""
    state: dict[str, Any] = {"leaf": 1}
    for _ in range(MAX_DEPTH - 2):
        state = {"next": state, "pad": "x" * 300}  # each level an object of its own
    enc = Encoder()
    root, _ = enc.encode_root(state, None)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(120)  # far fewer frames than the tree has levels
    try:
        back = Decoder(enc.objects).build(root)
    finally:
        sys.setrecursionlimit(old)
    assert back == state


def test_nodes_nested_deeper_than_castate_writes_are_corrupt_not_a_crash() -> None:
    root, objects = deep_chain(5000)
    with pytest.raises(CorruptObjectError, match="nested deeper than 200"):
        Decoder(objects).build(root)
    root, objects = deep_chain(MAX_DEPTH - 1)
    assert Decoder(objects).build(root) is not None


def test_both_ways_of_building_agree() -> None:
    state = {
        "a": [1, {"b": b"\x00" * 10, "c": "x" * 5000}],
        "l": list(range(3000)),
        "d": {str(i): {"v": i, "pad": "p" * 300} for i in range(900)},
        "big": "y" * 200_000,
    }
    enc = Encoder()
    root, _ = enc.encode_root(state, None)
    decoder = Decoder(enc.objects)
    assert decoder._build_with_own_stack(root, root) == decoder.build(root) == state


def test_a_commit_claiming_millions_of_parents_is_refused_before_building_them() -> None:
    """Found by tests/test_fuzz.py: the parent count was trusted, so a damaged count built up to
    four billion ids (a hang and a huge allocation) before the length check."""
    content = b"\x01" * 32 + (1 << 22).to_bytes(4, "little") + b"\x80"
    tracemalloc.start()
    try:
        with pytest.raises(CorruptObjectError, match="parents do not fit"):
            parse_commit(b"\x00" * 32, content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _node_object(kind: int, specials: list[tuple[int, int, bytes]], body: bytes) -> tuple[bytes, tuple[int, bytes]]:
    content = encode_node(specials, body)
    return object_id(kind, content), (kind, content)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (KIND_DICT, b"\x92\x01\x02"),  # a list body in a dict node
        (KIND_LIST, b"\x81\xa1k\x01"),  # a dict body in a list node
        (KIND_LIST, b"\xc1"),  # never-used msgpack byte
        (KIND_DICT, b"\x81\xa1k"),  # truncated
    ],
)
def test_a_bad_body_is_corrupt_with_or_without_refs(kind: int, body: bytes) -> None:
    """A node without refs is decoded by a shorter path than one with refs: both refuse a bad
    body and name the node, as the root and below a parent, building either way."""
    leaf_id, leaf = _node_object(KIND_LIST, [], b"\x90")
    for specials in ([], [(0, TAG_REF, leaf_id)]):
        bad_id, bad = _node_object(kind, specials, body)
        parent_id, parent = _node_object(KIND_DICT, [(0, TAG_REF, bad_id)], ormsgpack.packb({"x": None}))
        decoder = Decoder({bad_id: bad, leaf_id: leaf, parent_id: parent})
        for root in (bad_id, parent_id):
            with pytest.raises(CorruptObjectError) as info:
                decoder.build(root)
            assert info.value.object_id == bad_id.hex()
            with pytest.raises(CorruptObjectError) as info:
                decoder._build_with_own_stack(root, root)
            assert info.value.object_id == bad_id.hex()


def test_nodes_with_and_without_refs_decode_alike() -> None:
    """A node without refs and nodes whose refs fill entries, read from bytes or from the
    memoryviews ``decode_frame`` returns; a node met twice is two fresh containers."""
    blob = "z" * 3000
    blob_id = object_id(KIND_STR, blob.encode())
    plain_id, plain = _node_object(KIND_DICT, [], ormsgpack.packb({"a": [1, b"\x00"], "b": -(2**63)}))
    list_id, listed = _node_object(
        KIND_LIST, [(1, TAG_REF, plain_id), (2, TAG_REF, plain_id)], ormsgpack.packb([0.5, None, None, "s"])
    )
    root_id, root = _node_object(
        KIND_DICT, [(0, TAG_REF, blob_id), (1, TAG_REF, list_id)], ormsgpack.packb({"blob": None, "l": None})
    )
    contents = {blob_id: (KIND_STR, blob.encode()), plain_id: plain, list_id: listed, root_id: root}
    views = {
        oid: decode_frame(oid, encode_frame(kind, content, compress=False)) for oid, (kind, content) in contents.items()
    }
    assert all(type(content) is memoryview for _, content in views.values())
    plain_value = {"a": [1, b"\x00"], "b": -(2**63)}
    want = {"blob": blob, "l": [0.5, plain_value, plain_value, "s"]}
    for decoder in (Decoder(contents), Decoder(views)):
        for got in (decoder.build(root_id), decoder._build_with_own_stack(root_id, root_id)):
            assert got == want
            assert type(got["l"][1]["a"][1]) is bytes
            assert got["l"][1] is not got["l"][2]
            assert got["l"][1]["a"] is not got["l"][2]["a"]


def test_a_node_without_refs_one_level_too_deep_is_corrupt() -> None:
    root, objects = deep_chain(MAX_DEPTH - 1)  # the leaf, which holds no refs, is at the limit
    assert Decoder(objects).build(root) is not None
    root, objects = deep_chain(MAX_DEPTH)
    with pytest.raises(CorruptObjectError, match="nested deeper than 200"):
        Decoder(objects).build(root)
