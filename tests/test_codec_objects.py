"""Frames and ids: every read is verified, and damage raises an error naming the object."""

from __future__ import annotations

import pytest
import zstandard

from castate.codec.objects import (
    CODEC_RAW,
    CODEC_ZSTD,
    FORMAT_VERSION,
    KIND_DICT,
    KIND_STR,
    MAX_CONTENT,
    decode_frame,
    encode_frame,
    object_id,
)
from castate.errors import CorruptObjectError, UnsupportedFormatError


def test_id_covers_kind_and_content() -> None:
    assert object_id(KIND_STR, b"x") != object_id(KIND_DICT, b"x")
    assert object_id(KIND_STR, b"x") == object_id(KIND_STR, memoryview(b"x"))
    assert len(object_id(KIND_STR, b"")) == 32


def test_frames_roundtrip_raw_and_compressed() -> None:
    small = b"tiny"
    big = b"compressible " * 1000
    f1, f2 = encode_frame(KIND_STR, small), encode_frame(KIND_STR, big)
    assert f1[:3] == bytes((FORMAT_VERSION, KIND_STR, CODEC_RAW))
    assert f2[:3] == bytes((FORMAT_VERSION, KIND_STR, CODEC_ZSTD))
    assert len(f2) < len(big) / 10
    for content, frame in ((small, f1), (big, f2)):
        kind, out = decode_frame(object_id(KIND_STR, content), frame)
        assert kind == KIND_STR
        assert bytes(out) == content


def test_uncompressible_content_is_stored_raw() -> None:
    import os

    data = os.urandom(4096)
    assert encode_frame(KIND_STR, data)[2] == CODEC_RAW


@pytest.mark.parametrize("position", [0, 1, 2, 3, 10, -1])
def test_any_flipped_byte_is_caught(position: int) -> None:
    content = b"some content that matters " * 50
    oid = object_id(KIND_STR, content)
    for frame in (encode_frame(KIND_STR, content), encode_frame(KIND_STR, content, compress=False)):
        damaged = bytearray(frame)
        damaged[position] ^= 0x01
        with pytest.raises((CorruptObjectError, UnsupportedFormatError)) as info:
            decode_frame(oid, bytes(damaged))
        if isinstance(info.value, CorruptObjectError):
            assert info.value.object_id == oid.hex()


def test_truncated_frames_are_caught() -> None:
    content = b"truncate me " * 100
    oid = object_id(KIND_STR, content)
    frame = encode_frame(KIND_STR, content)
    for cut in (0, 2, 5, len(frame) // 2, len(frame) - 1):
        with pytest.raises(CorruptObjectError, match=oid.hex()):
            decode_frame(oid, frame[:cut])


def test_a_newer_format_version_is_refused_clearly() -> None:
    content = b"from the future"
    frame = bytes((FORMAT_VERSION + 1,)) + encode_frame(KIND_STR, content)[1:]
    with pytest.raises(UnsupportedFormatError, match="format version"):
        decode_frame(object_id(KIND_STR, content), frame)


def test_decompression_bombs_are_refused_before_allocating() -> None:
    oid = object_id(KIND_STR, b"x")
    header = bytes((FORMAT_VERSION, KIND_STR, CODEC_ZSTD))
    streamed = zstandard.ZstdCompressor().compressobj()
    no_size = streamed.compress(b"\x00" * 1000) + streamed.flush()
    with pytest.raises(CorruptObjectError, match="size"):
        decode_frame(oid, header + no_size)
    too_big = zstandard.ZstdCompressor().compress(b"\x00" * (MAX_CONTENT + 1))
    with pytest.raises(CorruptObjectError, match="size"):
        decode_frame(oid, header + too_big)


def test_unknown_kind_and_codec_are_corrupt() -> None:
    oid = object_id(KIND_STR, b"x")
    with pytest.raises(CorruptObjectError, match="kind"):
        decode_frame(oid, bytes((FORMAT_VERSION, 0x7A, CODEC_RAW)) + b"x")
    with pytest.raises(CorruptObjectError, match="codec"):
        decode_frame(oid, bytes((FORMAT_VERSION, KIND_STR, 9)) + b"x")
