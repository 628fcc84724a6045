"""Snapshots <-> objects: encode a state for writing, fetch and rebuild a state for reading."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from castate.backends.base import Backend
from castate.codec import Decoder, Encoder, Shadow, child_ids, encode_frame
from castate.codec.decoder import Content
from castate.codec.encoder import Default
from castate.codec.objects import PLAIN, Ids
from castate.errors import MissingObjectError

Fetch = Callable[[list[bytes]], Awaitable[dict[bytes, tuple[int, Content]]]]


def encode_state(
    state: Any, shadow: Shadow | None, default: Default | None, ids: Ids = PLAIN
) -> tuple[bytes, Shadow | None, dict[bytes, tuple[int, bytes]]]:
    """Root id, new shadow and the objects of ``state`` (only those the shadow did not know)."""
    enc = Encoder(default, ids)
    root, new_shadow = enc.encode_root(state, shadow)
    return root, new_shadow, enc.objects


def frames(objects: dict[bytes, tuple[int, bytes]], compress: bool) -> list[tuple[bytes, bytes]]:
    return [(oid, encode_frame(kind, content, compress=compress)) for oid, (kind, content) in objects.items()]


async def fetch_objects(backend: Backend, ids: Iterable[bytes]) -> dict[bytes, tuple[int, Content]]:
    """Read and verify objects; raise MissingObjectError for the first one that is absent."""
    wanted = list(dict.fromkeys(ids))
    got = await backend.get_objects(wanted)
    out: dict[bytes, tuple[int, Content]] = {}
    for oid in wanted:
        frame = got.get(oid)
        if frame is None:
            raise MissingObjectError(oid.hex())
        out[oid] = backend.ids.decode_frame(oid, frame)
    return out


async def fetch_tree(backend: Backend, root: bytes) -> dict[bytes, tuple[int, Content]]:
    """Every object of the tree under ``root``, one batch per tree level."""
    contents: dict[bytes, tuple[int, Content]] = {}
    await fetch_levels(lambda ids: fetch_objects(backend, ids), [root], contents)
    return contents


async def fetch_levels(fetch: Fetch, roots: Iterable[bytes], contents: dict[bytes, tuple[int, Content]]) -> None:
    """Bring every object under ``roots`` into ``contents``, calling ``fetch`` once per tree
    level for the objects ``contents`` lacks."""
    visited: set[bytes] = set()
    frontier = list(dict.fromkeys(roots))
    while frontier:
        need = [oid for oid in frontier if oid not in contents]
        if need:
            contents.update(await fetch(need))
        visited.update(frontier)
        nxt: dict[bytes, None] = {}
        for oid in frontier:
            kind, content = contents[oid]
            for child in child_ids(oid, kind, content):
                if child not in visited:
                    nxt[child] = None
        frontier = list(nxt)


async def read_state(backend: Backend, root: bytes) -> Any:
    return Decoder(await fetch_tree(backend, root)).build(root)
