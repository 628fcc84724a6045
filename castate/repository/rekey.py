"""Translating objects between two stores' ids (plain blake3, or blake3 keyed per store).

The same content has different ids in stores with different id keys (and in a plain store),
so an object moved between them is written again under the destination's ids, and so is
every object that points at it: its content holds its children's ids. ``rewrite`` replaces
those ids where the node layouts put them (docs/format.md §1.3 to §1.7: the refs table of a
dict or list node, an index's entries, a chunk list's entries, a typed object's inner id, a
commit's root and parents), parsing and re-encoding through ``castate.codec.nodes`` and
keeping every other byte as it was; ``postorder`` orders the objects children first, so a
parent is rewritten once its children's new ids are known. ``Spill`` keeps the objects that
wait for their children out of memory, encrypted under a key that lives only as long as it.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tempfile
from collections.abc import Mapping
from typing import IO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from castate.codec.decoder import Content, child_ids
from castate.codec.nodes import (
    TAG_REF,
    encode_chunked,
    encode_index,
    encode_node,
    encode_typed,
    parse_chunked,
    parse_commit,
    parse_index,
    parse_specials,
    parse_typed,
)
from castate.codec.objects import ID_SIZE, KIND_CHUNKED, KIND_COMMIT, KIND_DICT, KIND_INDEX, KIND_LIST, KIND_TYPED, Ids
from castate.errors import CorruptObjectError

_U32 = struct.Struct("<I")
_NONCE = struct.Struct("<Q4x")


def same_ids(a: Ids, b: Ids) -> bool:
    """Whether two stores name objects alike (both plain, or keyed with one key)."""
    return a.key == b.key


def references(oid: bytes, kind: int, content: Content) -> list[bytes]:
    """Every object id ``content`` holds: its children, and a commit's root and parents.
    Raises CorruptObjectError when the content does not parse."""
    if kind == KIND_COMMIT:
        commit = parse_commit(oid, content)
        return [commit.root, *commit.parents]
    return child_ids(oid, kind, content)


def rewrite(oid: bytes, kind: int, content: Content, new: Mapping[bytes, bytes]) -> bytes:
    """``content`` with every id it holds replaced by ``new[id]``. A commit's parents that
    ``new`` lacks (history outside what is being moved) stay as they are; any other id it
    lacks is a KeyError (the caller maps children first). Bytes that are not ids are kept."""
    if kind in (KIND_DICT, KIND_LIST):
        specials, off = parse_specials(oid, content)
        if not specials:
            return bytes(content)
        return encode_node([(pos, TAG_REF, new[ref]) for pos, _, ref in specials], bytes(content[off:]))
    if kind == KIND_INDEX:
        flavor, entries = parse_index(oid, content)
        return encode_index(flavor, [(new[c], n) for c, n in entries])
    if kind == KIND_CHUNKED:
        target, total, chunks = parse_chunked(oid, content)
        return encode_chunked(target, total, [(new[c], n) for c, n in chunks])
    if kind == KIND_TYPED:
        code, inner, name = parse_typed(oid, content)
        return encode_typed(code, new[inner], name)
    if kind == KIND_COMMIT:
        # Root and parents replaced in place; the body (session, name, time, metadata) is kept
        # byte for byte rather than encoded again, so nothing in it can change on the way.
        commit = parse_commit(oid, content)
        body = ID_SIZE + 4 + ID_SIZE * len(commit.parents)
        parents = b"".join(new.get(p, p) for p in commit.parents)
        return new[commit.root] + _U32.pack(len(commit.parents)) + parents + bytes(content[body:])
    return bytes(content)


def postorder(deps: Mapping[bytes, list[bytes]]) -> list[bytes]:
    """The keys of ``deps`` ordered so that each comes after those of its ``deps`` that are
    keys too (ids that are not keys are already translated, or history kept as it is).
    CorruptObjectError on a cycle, which verified ids cannot make but a bug could."""
    order: list[bytes] = []
    state: dict[bytes, bool] = {}  # False: on the path being walked; True: placed
    for start in deps:
        if start in state:
            continue
        state[start] = False
        stack = [(start, iter(deps[start]))]
        while stack:
            node, todo = stack[-1]
            for child in todo:
                if child not in deps:
                    continue
                placed = state.get(child)
                if placed is None:
                    state[child] = False
                    stack.append((child, iter(deps[child])))
                    break
                if not placed:
                    raise CorruptObjectError(child.hex(), "objects that point at each other")
            else:
                stack.pop()
                state[node] = True
                order.append(node)
    return order


class Spill:
    """Frames kept in an anonymous temporary file until they are wanted, each sealed with
    AES-256-GCM under a random key held only in memory (what waits here may be the plaintext
    of an encrypted bundle), its id as associated data. Writes are buffered and go to the
    file in one worker-thread call per MiB."""

    FLUSH = 1 << 20

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="castate-import-")  # noqa: SIM115 (closed by close())
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._where: dict[bytes, tuple[int, int, int]] = {}  # id -> offset, length of its sealed frame, nonce
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._end = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, oid: object) -> bool:
        return oid in self._where

    async def put(self, oid: bytes, frame: bytes) -> None:
        if oid in self._where:
            raise ValueError(f"object {oid.hex()} spilled twice")
        n = len(self._where)  # a nonce used once: entries are never replaced
        sealed = self._aead.encrypt(_NONCE.pack(n), frame, oid)
        self._where[oid] = (self._end + self._buffered, len(sealed), n)
        self._buffer.append(sealed)
        self._buffered += len(sealed)
        if self._buffered >= self.FLUSH:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            await asyncio.to_thread(self._append, data)
            self._end += len(data)

    def _append(self, data: bytes) -> None:
        self._file.seek(0, os.SEEK_END)
        self._file.write(data)

    async def get_many(self, ids: list[bytes]) -> list[bytes]:
        """The frames of ``ids`` (put and flushed before), in that order."""
        where = [self._where[oid] for oid in ids]
        raw = await asyncio.to_thread(self._read, where)
        return [
            self._aead.decrypt(_NONCE.pack(n), data, oid) for oid, (_, _, n), data in zip(ids, where, raw, strict=True)
        ]

    def size(self, oid: bytes) -> int:
        """The sealed length of ``oid`` (to read a bounded number of bytes at a time)."""
        return self._where[oid][1]

    def _read(self, where: list[tuple[int, int, int]]) -> list[bytes]:
        out = []
        for off, n, _ in where:
            self._file.seek(off)
            out.append(self._file.read(n))
        return out

    def close(self) -> None:
        self._file.close()


__all__ = ["Spill", "postorder", "references", "rewrite", "same_ids"]
