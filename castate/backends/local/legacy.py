"""Format-1 local stores, read once by ``castate upgrade``: their packs and loose objects.

Format 1 kept objects in the local store's own pack files (``packs/*.pack``: zstd chains of
records, docs/format.md §3.4) and loose files (``objects/ab/<62 hex>``). Format 2 keeps them
in the repository's packs, as every backend does; this module only reads the old files, with
the bounds ``packs.py`` sets on hostile records, so the upgrade can move their objects.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from castate.backends.local import packs as packfmt
from castate.backends.local.files import read_regular
from castate.codec.objects import MAX_CONTENT
from castate.errors import CorruptFileError

MAX_FRAME = MAX_CONTENT + 3  # the largest frame castate writes (a loose object file holds one)
DIRS = ("packs", "objects")


class FormatOneObjects:
    """The objects of a format-1 store directory, found by scanning its packs and loose files."""

    def __init__(self, root: Path, cache_bytes: int = 64 << 20) -> None:
        self.root = root
        self._cache = packfmt.ChainCache(cache_bytes)
        self._packs: list[packfmt.Pack] = []
        self._index: dict[bytes, packfmt.Pack] = {}
        self._loose: list[bytes] = []

    def scan(self) -> None:
        """Read every pack's record heads and list the loose objects (what an open of format 1 did)."""
        packs_dir = self.root / "packs"
        if packs_dir.is_dir():
            for entry in sorted(os.scandir(packs_dir), key=lambda e: e.name):
                if entry.name.endswith(".pack"):
                    pack = packfmt.Pack(packs_dir / entry.name)
                    self._packs.append(pack)
                    for oid in packfmt.scan_pack(pack):
                        self._index.setdefault(oid, pack)
        objects_dir = self.root / "objects"
        if objects_dir.is_dir():
            for sub in sorted(os.scandir(objects_dir), key=lambda e: e.name):
                if not sub.is_dir(follow_symlinks=False) or len(sub.name) != 2:
                    continue
                for f in sorted(os.scandir(sub.path), key=lambda e: e.name):
                    try:
                        oid = bytes.fromhex(sub.name + f.name)
                    except ValueError:
                        continue
                    if len(oid) == 32 and oid not in self._index:
                        self._loose.append(oid)

    def ids(self) -> list[bytes]:
        """Every object id, packed ones first (in pack and record order: chains read in one sweep)."""
        packed = sorted(
            self._index,
            key=lambda oid: (self._index[oid].name, packfmt.unpack_loc(self._index[oid].entries[oid])[0]),
        )
        return packed + self._loose

    def frames(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """The stored frame of each id. A frame that cannot be read is replaced by a note saying
        why: it fails its check above, and the upgrade keeps it aside instead of losing it."""
        out: dict[bytes, bytes] = {}
        for oid in ids:
            pack = self._index.get(oid)
            try:
                if pack is not None:
                    rec_off, off, n = packfmt.unpack_loc(pack.entries[oid])
                    out[oid] = bytes(self._cache.record_bytes(pack, pack.records[rec_off])[off : off + n])
                else:
                    out[oid] = read_regular(self._path(oid), MAX_FRAME)
            except (CorruptFileError, FileNotFoundError) as exc:
                out[oid] = f"unreadable format-1 object: {exc}".encode()
        return out

    def _path(self, oid: bytes) -> Path:
        h = oid.hex()
        return self.root / "objects" / h[:2] / h[2:]

    def close(self) -> None:
        for pack in self._packs:
            pack.close()
        self._packs.clear()

    def drop(self) -> None:
        """Remove the format-1 directories (after every object was packed and made durable)."""
        self.close()
        for name in DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)


def has_format_one_files(root: Path) -> bool:
    return any((root / name).is_dir() for name in DIRS)
