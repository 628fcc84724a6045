"""Import a MARSYS FileStorageBackend directory (``sessions/`` and ``checkpoints/`` JSON files) into a castate store.

Each file becomes the key MARSYS loads it under (its name without ``.json``), stored as
``MarsysJsonStorage`` stores it, so MARSYS code runs unchanged once its backend is
swapped. A checkpoint is a near copy of its session: in the store it shares every unchanged
part with the session and the other checkpoints, so importing it costs about what differs.

    castate --store ./state import-marsys ./marsys_state
    python -m castate.compat.marsys_import marsys ./marsys_state ./state

(``castate.migrate`` is this module's old path, kept as a re-export: ``python -m
castate.migrate marsys ...`` still runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import orjson

from castate.compat.marsys import MarsysJsonStorage
from castate.errors import CastateError

MARSYS_DIRS = ("sessions", "checkpoints")


@dataclass
class ImportReport:
    """What an import did: keys written, keys already equal in the store, files skipped and why, sizes."""

    source: str
    store: str
    imported: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    source_bytes: int = 0
    store_bytes_added: int = 0
    objects_added: int = 0

    @property
    def ok(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        lines = [
            f"imported {len(self.imported)} keys ({len(self.unchanged)} already up to date) "
            f"from {self.source} into {self.store}",
            f"source JSON: {self.source_bytes:,} bytes; the store grew by {self.store_bytes_added:,} bytes "
            f"({self.objects_added:,} objects)",
        ]
        lines += [f"skipped {name}: {reason}" for name, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def _canonical(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _marsys_files(source: Path) -> list[tuple[str, Path]]:
    """(key, file) for every file MARSYS's FileStorageBackend would list, and the misplaced ones."""
    out = []
    for sub in MARSYS_DIRS:
        directory = source / sub
        if directory.is_dir():
            out += [(p.stem, p) for p in sorted(directory.glob("*.json")) if p.is_file()]
    return out


async def import_marsys_directory(
    source: str | os.PathLike[str],
    store: str | os.PathLike[str] | MarsysJsonStorage,
    *,
    overwrite: bool = True,
) -> ImportReport:
    """Import every ``sessions/*.json`` and ``checkpoints/*.json`` file of a MARSYS directory.

    ``store`` is a castate store directory or an open ``MarsysJsonStorage``. A key the store
    already holds with other content is replaced, unless ``overwrite=False`` (then it is
    skipped and reported). Files MARSYS could not load (invalid JSON, not an object, in the
    wrong directory) or castate cannot hold (NaN, huge ints) are skipped and reported;
    the rest is imported. Running the import again changes nothing that is equal.
    """
    src = Path(source)
    if not all((src / sub).is_dir() for sub in MARSYS_DIRS):
        raise CastateError(f"{src} is not a MARSYS state directory (it needs sessions/ and checkpoints/)")
    backend = store if isinstance(store, MarsysJsonStorage) else MarsysJsonStorage(store)
    report = ImportReport(str(src), str(backend.base_path))
    try:
        await backend.repository.open(create=True)  # an import creates the store, as a save does
        local = backend.repository.backend
        before = await local.stats()
        for key, path in _marsys_files(src):
            name = f"{path.parent.name}/{path.name}"
            if (path.parent.name == "checkpoints") != key.startswith("checkpoint_"):
                report.skipped[name] = "MARSYS never loads this file (its key belongs in the other directory)"
                continue
            data = path.read_bytes()
            report.source_bytes += len(data)
            try:
                value = json.loads(data)
            except ValueError as exc:
                report.skipped[name] = f"not valid JSON ({exc}); MARSYS loads it as None"
                continue
            if type(value) is not dict:
                report.skipped[name] = f"holds a JSON {type(value).__name__}, not an object"
                continue
            if not overwrite:
                existing = await backend.load(key)
                if existing is not None and _canonical(existing) != _canonical(value):
                    report.skipped[name] = f"the store already holds {key!r} with other content"
                    continue
            try:
                changed = await backend.save_json(key, value)
            except CastateError as exc:
                report.skipped[name] = str(exc)
                continue
            (report.imported if changed else report.unchanged).append(key)
        after = await local.stats()
        report.store_bytes_added = after.get("bytes_apparent", 0) - before.get("bytes_apparent", 0)
        report.objects_added = after["objects"] - before["objects"]
    finally:
        if backend is not store:
            await backend.close()
    return report


def cli_import_marsys(source: str, store: str, *, overwrite: bool = True, out: TextIO = sys.stdout) -> int:
    """Run an import and print its summary; the exit status for a command line (0: every file imported)."""
    try:
        report = asyncio.run(import_marsys_directory(source, store, overwrite=overwrite))
    except CastateError as exc:
        print(f"error: {exc}", file=out)
        return 2
    print(report.summary(), file=out)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None, *, prog: str = "python -m castate.compat.marsys_import") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Import state from other stores.")
    sub = parser.add_subparsers(dest="kind", required=True)
    marsys = sub.add_parser("marsys", help="a MARSYS FileStorageBackend directory (sessions/, checkpoints/)")
    marsys.add_argument("source", help="the MARSYS base_path")
    marsys.add_argument("store", help="the castate store directory (created if missing)")
    marsys.add_argument("--no-overwrite", action="store_true", help="skip keys the store holds with other content")
    args = parser.parse_args(argv)
    return cli_import_marsys(args.source, args.store, overwrite=not args.no_overwrite)


__all__ = ["ImportReport", "cli_import_marsys", "import_marsys_directory", "main"]

if __name__ == "__main__":
    sys.exit(main())
