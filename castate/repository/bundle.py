"""Export and import of one session as a self-contained bundle file (docs/format.md §5).

A bundle holds a session's head and checkpoint refs and every object they reach, in one
zstd stream, framed by a header with a JSON manifest and a trailer with the object count
and a blake3 digest of everything before it. Export streams the walk into the file (one
batch of objects in memory at a time) and renames it into place when complete. Import
verifies every object against its id, writes only what the target lacks, checks the
bundle is complete and intact and that the refs reach only trees the reader accepts
(kinds where they belong, nesting within the limit), and only then creates the refs, all
while holding the shared side of the gc lock, so objects it found present cannot vanish
before the refs point at them. A bundle holds each object once: a repeated record is
refused at once. What an import holds in memory is counted decompressed (a record of a few
bytes can stand for 64 MiB), so it stays within one write batch plus one object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import blake3
import orjson
import zstandard

from castate.backends.base import Backend, RefUpdate
from castate.codec import decode_frame, encode_frame
from castate.codec.decoder import Content
from castate.codec.encoder import MAX_DEPTH
from castate.codec.objects import ID_SIZE, KIND_COMMIT, KIND_DICT, KIND_LIST, KIND_NAMES
from castate.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptFileError,
    CorruptionError,
    NotFoundError,
    UnsupportedFormatError,
)
from castate.repository import refs as names
from castate.repository.repository import Repository
from castate.repository.walk import Problem, Walker, links

MAGIC = b"CASTBNDL"
VERSION = 1
TRAILER_MAGIC = b"CASTTAIL"
HEADER = struct.Struct("<8sB7xI")  # magic, version, reserved, manifest length
TRAILER = struct.Struct("<8sQ32s")  # magic, object count, blake3 of every byte before the trailer
RECORD = struct.Struct("<32sI")  # object id, frame length
MAX_MANIFEST = 64 << 20
MAX_FRAME = (64 << 20) + 1024
READ_SIZE = 1 << 20
SLICE = 1 << 10  # compressed bytes decompressed at a time: at most 32 MiB come out of them
MAX_WINDOW = 8 << 20  # export writes zstd windows of 2 MiB (level 3); more is refused, not allocated
WRITE_BATCH = 4 << 20  # bytes of frames an import stores per call

#: progress(done, total): objects for export (total None), bytes of the file for import.
BundleProgress = Callable[[int, int | None], None]


@dataclass(slots=True)
class BundleReport:
    path: str
    session: str
    refs: dict[str, str] = field(default_factory=dict)  # ref name -> commit id (hex)
    objects: int = 0
    written: int = 0  # import: objects the target lacked
    bytes: int = 0  # size of the bundle file


async def export_session(
    repo: Repository, session_id: str, path: str | os.PathLike[str], *, progress: BundleProgress | None = None
) -> BundleReport:
    """Write the session (head and checkpoints, with every object they reach) to ``path``."""
    await repo.open()
    backend = repo.backend
    refs = dict(await backend.get_refs([names.session_ref(session_id)]))
    refs.update(await backend.list_refs(names.checkpoint_prefix(session_id)))
    if not refs:
        raise NotFoundError(f"no session {session_id!r} to export")
    target = Path(path)
    manifest = orjson.dumps(
        {
            "castate": "bundle",
            "version": VERSION,
            "created_ns": time.time_ns(),
            "session": session_id,
            "refs": {name: cid.hex() for name, cid in sorted(refs.items())},
        },
        option=orjson.OPT_SORT_KEYS,
    )
    report = BundleReport(str(target), session_id, {n: c.hex() for n, c in sorted(refs.items())})
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    hasher = blake3.blake3()
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True).compressobj()
    records: list[bytes] = []
    try:
        async with aiofiles.open(tmp, "wb", opener=_private) as f:

            async def write(data: bytes) -> None:
                if data:
                    hasher.update(data)
                    await f.write(data)

            def visit(oid: bytes, kind: int, frame: bytes | memoryview, content: Content) -> None:
                records.append(RECORD.pack(oid, len(frame)))
                records.append(bytes(frame))

            async def flush() -> None:
                data = compressor.compress(b"".join(records))
                records.clear()
                await write(data)

            await write(HEADER.pack(MAGIC, VERSION, len(manifest)) + manifest)
            walker = Walker(
                backend,
                on_object=visit,
                on_batch=flush,
                progress=(lambda n: progress(n, None)) if progress else None,
            )
            await walker.walk(set(refs.values()), frozenset((KIND_COMMIT,)))
            if walker.problems:
                p = next(iter(walker.problems.values()))
                raise CorruptionError(
                    f"cannot export {session_id!r}: {len(walker.problems)} object(s) missing or corrupt, "
                    f"first {p.id.hex()} ({p.detail}); run `castate fsck`"
                )
            await write(compressor.flush())
            report.objects = walker.visited
            trailer = TRAILER.pack(TRAILER_MAGIC, walker.visited, hasher.digest())
            await f.write(trailer)
            await f.flush()
            await asyncio.to_thread(os.fsync, f.fileno())
        await aiofiles.os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(tmp)
        raise
    report.bytes = (await aiofiles.os.stat(target)).st_size
    return report


def _private(path: str, flags: int) -> int:
    """Open a new bundle file readable by its owner only: it holds the session's state."""
    return os.open(path, flags, 0o600)


def _bad(path: Path, reason: str) -> CorruptFileError:
    return CorruptFileError(
        str(path), f"{reason} (the bundle is damaged or not a castate bundle; nothing was imported)"
    )


def _rename(ref: str, old: str, new: str | None, path: Path) -> str:
    """Check a bundle ref belongs to its session; move it to session ``new`` if given."""
    old_part = names.encode_part(old)
    new_part = names.encode_part(new if new is not None else old)
    if ref == names.SESSIONS + old_part:
        return names.SESSIONS + new_part
    if ref.startswith(names.CHECKPOINTS + old_part + "/"):
        cpid = ref[len(names.CHECKPOINTS) :]
        try:
            names.parse_checkpoint_id(cpid)
        except ValueError:
            raise _bad(path, f"ref {ref[:80]!r} is not a checkpoint") from None
        return names.CHECKPOINTS + new_part + cpid[len(old_part) :]
    raise _bad(path, f"ref {ref[:80]!r} does not belong to session {old!r}")


async def _read_exact(f: Any, n: int, path: Path) -> bytes:
    data = await f.read(n)
    if len(data) != n:
        raise _bad(path, "the file ends early")
    return bytes(data)


async def _check_tree(
    backend: Backend,
    heads: set[bytes],
    kinds: dict[bytes, int],
    edges: dict[bytes, list[tuple[bytes, frozenset[int]]]],
) -> Problem | None:
    """The reader's rules over what the refs will reach, as ``walk.Walker`` applies them: each
    object of a kind its parent may point at (a commit's root a dict, never a commit inside a
    state) and dict and list nodes nested at most ``MAX_DEPTH`` deep. Objects of the bundle are
    checked from what the import recorded of them; subtrees already in the store are walked
    there, from the depth where the bundle reaches them."""
    todo: dict[bytes, tuple[frozenset[int], int]] = {h: (frozenset((KIND_COMMIT,)), 0) for h in heads}
    done: set[bytes] = set()
    stored: list[tuple[bytes, frozenset[int], int]] = []
    while todo:
        level, todo = todo, {}
        for oid, (want, depth) in level.items():
            done.add(oid)
            kind = kinds.get(oid)
            if kind is None:
                stored.append((oid, want, depth))
                continue
            if kind not in want:
                allowed_names = " or ".join(sorted(KIND_NAMES[k] for k in want))
                return Problem(oid, "corrupt", f"a {KIND_NAMES[kind]} object where a {allowed_names} belongs", None)
            if kind in (KIND_DICT, KIND_LIST):
                if depth >= MAX_DEPTH:
                    return Problem(oid, "corrupt", f"nodes nested deeper than {MAX_DEPTH} levels", None)
                depth += 1  # container nodes nest; index nodes and commits do not
            for child, allowed in edges.get(oid, ()):
                if child not in done and child not in todo:
                    todo[child] = (allowed, depth)
    for oid, want, depth in stored:
        walker = Walker(backend, fetch_chunks=False)
        await walker.walk([oid], want, depth=depth)
        if walker.problems:
            return next(iter(walker.problems.values()))
    return None


async def import_bundle(
    repo: Repository,
    path: str | os.PathLike[str],
    *,
    session_id: str | None = None,
    progress: BundleProgress | None = None,
) -> BundleReport:
    """Import a bundle; ``session_id`` imports it under another session id. ConflictError
    when the session (or one of its checkpoints) exists already: nothing is replaced.
    Like a save, it creates a store that does not exist yet (``Repository.open``)."""
    await repo.open(create=True)
    backend = repo.backend
    source = Path(path)
    size = (await aiofiles.os.stat(source)).st_size
    async with aiofiles.open(source, "rb") as f:
        head = await _read_exact(f, HEADER.size, source)
        magic, version, mlen = HEADER.unpack(head)
        if magic != MAGIC:
            raise _bad(source, "no bundle header")
        if version > VERSION:
            raise UnsupportedFormatError(f"{source} is a version {version} bundle; this castate reads up to {VERSION}")
        if mlen > MAX_MANIFEST or HEADER.size + mlen + TRAILER.size > size:
            raise _bad(source, "bad manifest length")
        raw_manifest = await _read_exact(f, mlen, source)
        hasher = blake3.blake3(head)
        hasher.update(raw_manifest)
        try:
            manifest = orjson.loads(raw_manifest)
            old_session = names.check_name(manifest["session"], "session id")
            bundle_refs = {str(k): bytes.fromhex(v) for k, v in manifest["refs"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise _bad(source, "unreadable manifest") from None
        if session_id is not None:
            names.check_name(session_id, "session id")
        new_refs = {_rename(r, old_session, session_id, source): c for r, c in bundle_refs.items()}
        if any(len(c) != ID_SIZE for c in new_refs.values()):
            raise _bad(source, "bad commit id in the manifest")
        report = BundleReport(str(source), session_id or old_session, {n: c.hex() for n, c in sorted(new_refs.items())})

        body_left = size - HEADER.size - mlen - TRAILER.size
        done = HEADER.size + mlen
        seen: set[bytes] = set()
        kinds: dict[bytes, int] = {}
        edges: dict[bytes, list[tuple[bytes, frozenset[int]]]] = {}  # object -> children, kinds allowed there
        pending: list[tuple[bytes, bytes]] = []
        pending_bytes = 0
        buf = bytearray()
        decomp = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
        compress = not backend.packs_objects

        async def store() -> None:
            nonlocal pending_bytes
            if pending:
                have = await backend.has_objects([oid for oid, _ in pending])
                new = [(oid, fr) for oid, fr in pending if oid not in have]
                if new:
                    report.written += await backend.put_objects(new, stream=f"import {report.session}")
                pending.clear()
                pending_bytes = 0

        async with backend.gc_shared():
            while body_left > 0:
                chunk = await f.read(min(READ_SIZE, body_left))
                if not chunk:
                    raise _bad(source, "the file ends early")
                body_left -= len(chunk)
                done += len(chunk)
                hasher.update(chunk)
                view = memoryview(chunk)
                # Slices, not the whole chunk: zstd can expand 1 KiB into 32 MiB, and a crafted
                # bundle must not make an import allocate 32,768 times its size at once.
                for start in range(0, len(view), SLICE):
                    try:
                        buf += decomp.decompress(view[start : start + SLICE])
                    except zstandard.ZstdError as exc:
                        raise _bad(source, f"zstd: {exc}") from None
                    off = 0
                    while len(buf) - off >= RECORD.size:
                        oid, n = RECORD.unpack_from(buf, off)
                        if n > MAX_FRAME:
                            raise _bad(source, f"object {oid.hex()} claims {n} bytes")
                        if len(buf) - off - RECORD.size < n:
                            break
                        if oid in seen:  # before any work: a repeated record costs nothing to refuse
                            raise _bad(source, f"object {oid.hex()} appears twice (a bundle holds each object once)")
                        frame = bytes(buf[off + RECORD.size : off + RECORD.size + n])
                        off += RECORD.size + n
                        kind, content = decode_frame(oid, frame)  # CorruptObjectError names it
                        children = links(oid, kind, content, deep=True)
                        if children:
                            edges[oid] = children
                        seen.add(oid)
                        kinds[oid] = kind
                        stored = encode_frame(kind, bytes(content), compress=compress)
                        del frame, content
                        pending.append((oid, stored))
                        # Counted as held, decompressed where the backend wants raw frames: a
                        # record of a few bytes can stand for a 64 MiB object. Memory stays
                        # within one batch plus one object.
                        pending_bytes += len(stored)
                        if pending_bytes >= WRITE_BATCH:
                            await store()
                    if off:
                        del buf[:off]
                if progress is not None:
                    progress(done, size)
            if buf or not decomp.eof or decomp.unused_data:
                raise _bad(source, "the object stream is incomplete or has trailing bytes")
            magic, count, digest = TRAILER.unpack(await _read_exact(f, TRAILER.size, source))
            if magic != TRAILER_MAGIC or digest != hasher.digest():
                raise _bad(source, "the trailer does not match the contents")
            if count != len(seen):
                raise _bad(source, f"the trailer counts {count} objects, the stream holds {len(seen)}")
            await store()
            report.objects = len(seen)
            for name, cid in new_refs.items():
                if kinds.get(cid) != KIND_COMMIT:
                    raise _bad(source, f"ref {name} does not point at a commit in the bundle")
            outside = list({c for cs in edges.values() for c, _ in cs} - seen)
            if outside:
                present = await backend.has_objects(outside)
                if len(present) != len(outside):
                    lost = next(o for o in outside if o not in present)
                    raise _bad(source, f"object {lost.hex()} is referenced but neither in the bundle nor the store")
            problem = await _check_tree(backend, set(new_refs.values()), kinds, edges)
            if problem is not None:
                raise _bad(source, f"object {problem.id.hex()} breaks the rules of a stored state: {problem.detail}")
            try:
                await repo.update_refs(
                    [RefUpdate(n, c, None) for n, c in sorted(new_refs.items())],
                    message=f"import {source.name}"[:200],
                )
            except ConflictError:
                raise AlreadyExistsError(
                    f"session {report.session!r} (or one of its checkpoints) already exists in this store: "
                    "import it under another id (--session NEW) or remove it first (castate rm)",
                    names.session_ref(report.session) if report.session else None,
                ) from None
    report.bytes = size
    return report


__all__ = ["BundleReport", "export_session", "import_bundle"]
