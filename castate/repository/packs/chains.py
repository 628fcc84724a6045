"""Compression chains: the writer's open zstd stream per session, and the reader's cache of
decompressed chain prefixes, bounded in bytes."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import zstandard

from castate.codec.zstdlimits import bounded_decompress, decompressor
from castate.repository.packs.format import ZERO_ID, PackInfo, pack_name

ZSTD_LEVEL = 3
MAX_STREAMS = 16


@dataclass(slots=True)
class WriterChain:
    """A writer's open chain: its zstd stream and where it stands."""

    id: bytes
    cobj: Any
    seq: int = 0
    raw: int = 0
    last: bytes = ZERO_ID

    @classmethod
    def new(cls) -> WriterChain:
        cobj = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False).compressobj()
        return cls(os.urandom(16), cobj)

    def compress(self, raw: bytes) -> bytes:
        """The body of the chain's next pack: ``raw`` continuing the stream, flushed."""
        out: bytes = self.cobj.compress(raw) + self.cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return out

    def advance(self, name: str, raw_len: int) -> None:
        self.seq += 1
        self.raw += raw_len
        self.last = bytes.fromhex(name)


class WriterChains:
    """A writer's open chains by stream; a chain is cut before it passes ``chain_max`` raw bytes."""

    def __init__(self, chain_max: int) -> None:
        self.chain_max = chain_max
        self._chains: OrderedDict[str, WriterChain] = OrderedDict()

    def get(self, stream: str, incoming: int) -> WriterChain:
        chain = self._chains.get(stream)
        if chain is None or (chain.raw and chain.raw + incoming > self.chain_max):
            chain = self._chains[stream] = WriterChain.new()
        self._chains.move_to_end(stream)
        while len(self._chains) > MAX_STREAMS:
            self._chains.popitem(last=False)
        return chain

    def drop(self, stream: str) -> None:
        """Forget a stream's chain: its compressor ran ahead of what the store holds."""
        self._chains.pop(stream, None)

    def clear(self) -> None:
        self._chains.clear()


class ChainDamage(Exception):
    """A pack of a chain is missing or does not hold together; ``seq`` is the first one affected."""

    def __init__(self, seq: int, why: str, missing: bool = False) -> None:
        super().__init__(why)
        self.seq = seq
        self.why = why
        self.missing = missing  # a pack is absent (gc may have replaced the chain), not damaged
        self.oid: bytes | None = None  # the first asked-for object it makes unreadable


@dataclass(slots=True)
class _Decoded:
    dobj: Any  # positioned after pack ``done - 1``; None when it cannot continue
    raws: dict[int, bytes] = field(default_factory=dict)  # seq -> raw bytes
    done: int = 0
    size: int = 0


class ChainCache:
    """Decompressed prefixes of chains, least recently used dropped first, bounded in bytes
    (``max_bytes``, passed at most by the one chain being read)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, _Decoded] = OrderedDict()
        self._bytes = 0

    def raws(self, chain_id: bytes, seqs: set[int]) -> dict[int, bytes] | None:
        """The cached raw bytes of ``seqs`` of a chain, or None unless all are cached."""
        item = self._items.get(chain_id)
        if item is None or not seqs <= item.raws.keys():
            return None
        self._items.move_to_end(chain_id)
        return {s: item.raws[s] for s in seqs}

    def to_fetch(self, chain: list[PackInfo], top: int) -> list[PackInfo]:
        """The packs to decompress so that pack ``top`` of ``chain`` is: the rest of a prefix the
        cache can continue, else the whole prefix."""
        item = self._items.get(chain[0].chain) if chain else None
        start = item.done if item is not None and item.dobj is not None else 0
        return [p for p in chain if start <= p.seq <= top]

    def decompress(self, packs: list[PackInfo], blobs: dict[str, bytes]) -> None:
        """Decompress ``packs`` (consecutive, from a cached prefix's end or from seq 0) into the
        cache; raises ChainDamage at the first pack that is missing or does not hold together."""
        if not packs:
            return
        chain_id = packs[0].chain
        item = self._items.get(chain_id)
        if item is None or item.dobj is None or packs[0].seq != item.done:
            self.forget(chain_id)
            if packs[0].seq != 0:
                raise ChainDamage(0, "pack 0 of its compression chain is missing", missing=True)
            item = self._items[chain_id] = _Decoded(decompressor().decompressobj())
        self._items.move_to_end(chain_id)
        for pack in packs:
            if pack.seq != item.done:
                self.forget(chain_id)
                raise ChainDamage(item.done, f"pack {item.done} of its compression chain is missing", missing=True)
            data = blobs.get(pack.blob)
            if data is None:
                self.forget(chain_id)
                raise ChainDamage(pack.seq, f"pack {pack.name} is missing", missing=True)
            if len(data) != pack.size or pack_name(data) != pack.name:
                self.forget(chain_id)
                raise ChainDamage(pack.seq, f"pack {pack.name}: its bytes do not match its name")
            try:
                raw = bounded_decompress(item.dobj, memoryview(data)[pack.body_off :], pack.raw_len, pack.seq == 0)
            except zstandard.ZstdError as exc:
                self.forget(chain_id)
                raise ChainDamage(pack.seq, f"pack {pack.name}: zstd: {exc}") from None
            if raw is None or len(raw) != pack.raw_len:
                self.forget(chain_id)
                raise ChainDamage(pack.seq, f"pack {pack.name} decompressed to a wrong size")
            item.raws[pack.seq] = raw
            item.size += len(raw)
            self._bytes += len(raw)
            item.done = pack.seq + 1

    def put(self, pack: PackInfo, raw: bytes) -> None:
        """A pack this process wrote: its raw bytes, so reading it back decompresses nothing."""
        item = self._items.get(pack.chain)
        if item is None:
            item = self._items[pack.chain] = _Decoded(None, done=pack.seq + 1)
        item.dobj = None  # the reader's stream is not positioned after this pack
        item.raws[pack.seq] = raw
        item.size += len(raw)
        self._bytes += len(raw)
        self._items.move_to_end(pack.chain)

    def forget(self, chain_id: bytes) -> None:
        item = self._items.pop(chain_id, None)
        if item is not None:
            self._bytes -= item.size

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def evict(self) -> None:
        """Drop the least recently used chains until the cache is within its budget."""
        while self._bytes > self.max_bytes and self._items:
            self.forget(next(iter(self._items)))


__all__ = ["ChainCache", "ChainDamage", "WriterChain", "WriterChains"]
