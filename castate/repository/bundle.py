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

An encrypted store's bundle is that same stream sealed in records (``bundle_crypto``, §5.1),
opened by the store's own keys. Its object ids are keyed by the source store, so an import
into a store that names objects otherwise (plain, or another key) writes every object
again under the destination's ids (``rekey``); the objects that hold ids wait, encrypted in
a temporary file, until the bundle has passed every check, then go in children first.
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
from castate.codec import encode_frame
from castate.codec.decoder import Content
from castate.codec.encoder import MAX_DEPTH
from castate.codec.objects import ID_SIZE, KIND_COMMIT, KIND_DICT, KIND_LIST, KIND_NAMES, PLAIN, Ids
from castate.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptFileError,
    CorruptionError,
    NotFoundError,
    UnsupportedFormatError,
    UsageError,
)
from castate.keys import Secret, secret_from_env
from castate.repository import refs as names
from castate.repository.bundle_crypto import (
    ENCRYPTED_VERSION,
    MAX_KEY_HEADER,
    Opener,
    Sealer,
    bundle_secret_from_env,
    open_bundle,
    parse_key_header,
    source_keys,
)
from castate.repository.packs.store import PackStore
from castate.repository.rekey import Spill, postorder, references, rewrite, same_ids
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
    sealer: Sealer | None = None
    if isinstance(backend, PackStore) and backend.keys is not None:
        # An encrypted store's bundle is encrypted too, openable by the store's own keys.
        slots, bundle_key = await source_keys(backend)
        sealer = Sealer(slots, bundle_key, lambda raw: HEADER.pack(MAGIC, ENCRYPTED_VERSION, len(raw)) + raw)
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

            async def emit(data: bytes) -> None:
                if sealer is not None:
                    data = sealer.feed(data)
                if data:
                    await f.write(data)

            async def write(data: bytes) -> None:
                if data:
                    hasher.update(data)
                    await emit(data)

            def visit(oid: bytes, kind: int, frame: bytes | memoryview, content: Content) -> None:
                records.append(RECORD.pack(oid, len(frame)))
                records.append(bytes(frame))

            async def flush() -> None:
                data = compressor.compress(b"".join(records))
                records.clear()
                await write(data)

            if sealer is not None:
                await f.write(sealer.start)
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
            await emit(TRAILER.pack(TRAILER_MAGIC, walker.visited, hasher.digest()))
            if sealer is not None:
                await f.write(sealer.finish())
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
    key: Secret | None = None,
    progress: BundleProgress | None = None,
    plain: bool = False,
) -> BundleReport:
    """Import a bundle; ``session_id`` imports it under another session id. ConflictError
    when the session (or one of its checkpoints) exists already: nothing is replaced.
    Like a save, it creates a store that does not exist yet (``Repository.open``).

    A bundle exported from an encrypted store opens with that store's key: ``key``, else
    ``CASTATE_BUNDLE_PASSWORD``, ``CASTATE_BUNDLE_KEY`` or ``CASTATE_BUNDLE_KEY_FILE``, else
    this store's own key or ``CASTATE_PASSWORD``/``CASTATE_KEY``/``CASTATE_KEY_FILE``
    (KeyRequiredError when none opens it, WrongKeyError when ``key`` or the bundle variables
    do not). Objects are written under this store's ids and encryption: a bundle whose ids
    were made another way (plain, or keyed by another store) is translated (``rekey``). An
    encrypted bundle goes into an empty plain store only with ``plain`` (it would be written
    decrypted); give the store a key instead and it is made encrypted."""
    source = Path(path)
    size = (await aiofiles.os.stat(source)).st_size
    async with aiofiles.open(source, "rb") as f:
        reader, ids, stream_size = await _open_source(f, size, source, key, repo.backend)
        await repo.open(create=True)  # after the bundle's key opened it: a wrong key creates no store
        if ids.keyed and not plain and not repo.backend.ids.keyed and not await repo.list_refs():
            raise UsageError(
                f"bundle {source} is encrypted and store {repo.backend.location} is empty and not encrypted: "
                "give the store a key (key=, CASTATE_PASSWORD, --key-file) and it is made encrypted, or "
                "ask for a plain copy (plain=True, castate import --plain)"
            )
        report = await _Import(repo, source, reader, stream_size, ids, session_id, progress).run()
    report.bytes = size
    return report


async def _open_source(f: Any, size: int, source: Path, key: Secret | None, backend: Backend) -> tuple[Any, Ids, int]:
    """What reads the plain bundle stream from ``f`` (the file itself, or the records of an
    encrypted bundle opened), the ids its objects are named by, and the stream's length."""
    head = await _read_exact(f, HEADER.size, source)
    magic, version, mlen = HEADER.unpack(head)
    if magic != MAGIC:
        raise _bad(source, "no bundle header")
    if version != ENCRYPTED_VERSION:
        if key is not None:  # whoever gave a key expects the envelope's authenticity: a plain file has none
            raise UsageError(f"bundle {source} is not encrypted, but a bundle key was given")
        await f.seek(0)
        return f, PLAIN, size
    if mlen > MAX_KEY_HEADER or HEADER.size + mlen > size:
        raise _bad(source, "bad key header length")
    raw = await _read_exact(f, mlen, source)
    store, slots, salt = parse_key_header(raw, str(source))
    # Without a bundle key, the store's own key: it opens bundles of this store, and of any
    # store that shares its passphrase.
    secret = key if key is not None else bundle_secret_from_env()
    fallback = None
    if secret is None:
        fallback = (backend.secret if isinstance(backend, PackStore) else None) or secret_from_env()
    keys = await open_bundle(slots, secret, fallback, str(source), store)
    opener = Opener(f, head + raw, keys.bundle_key, salt, size, str(source))
    return opener, keys.ids, opener.size


class _Import:
    """One import: reads the plain bundle stream from ``reader``, verifies each object against
    the bundle's ``ids`` and writes it under the store's. When the two differ, an object
    without ids in it is written at once under its new id; one that holds ids waits in a
    ``Spill`` until the bundle has passed every check, then the waiting objects are written
    children first (``rekey.postorder``), each with its children's new ids (``rekey.rewrite``)."""

    def __init__(
        self,
        repo: Repository,
        source: Path,
        reader: Any,
        size: int,
        ids: Ids,
        session_id: str | None,
        progress: BundleProgress | None,
    ) -> None:
        self.repo = repo
        self.backend = repo.backend
        self.source = source
        self.reader = reader
        self.size = size
        self.ids = ids
        self.session_id = session_id
        self.progress = progress
        self.translate = not same_ids(ids, self.backend.ids)
        self.compress = not self.backend.packs_objects
        self.seen: set[bytes] = set()
        self.kinds: dict[bytes, int] = {}
        self.edges: dict[bytes, list[tuple[bytes, frozenset[int]]]] = {}  # object -> children, kinds allowed there
        self.pending: list[tuple[bytes, bytes]] = []
        self.pending_bytes = 0
        self.new: dict[bytes, bytes] = {}  # translating: bundle id -> id in this store
        self.waiting: dict[bytes, list[bytes]] = {}  # translating: spilled object -> the ids it holds
        self.parents: set[bytes] = set()  # translating: the parents the bundle's commits name
        self.report = BundleReport(str(source), "")

    async def run(self) -> BundleReport:
        source = self.source
        head = await _read_exact(self.reader, HEADER.size, source)
        magic, version, mlen = HEADER.unpack(head)
        if magic != MAGIC:
            raise _bad(source, "no bundle header")
        if version > VERSION:
            raise UnsupportedFormatError(f"{source} is a version {version} bundle; this castate reads up to {VERSION}")
        if mlen > MAX_MANIFEST or HEADER.size + mlen + TRAILER.size > self.size:
            raise _bad(source, "bad manifest length")
        raw_manifest = await _read_exact(self.reader, mlen, source)
        hasher = blake3.blake3(head)
        hasher.update(raw_manifest)
        try:
            manifest = orjson.loads(raw_manifest)
            old_session = names.check_name(manifest["session"], "session id")
            bundle_refs = {str(k): bytes.fromhex(v) for k, v in manifest["refs"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise _bad(source, "unreadable manifest") from None
        if self.session_id is not None:
            names.check_name(self.session_id, "session id")
        new_refs = {_rename(r, old_session, self.session_id, source): c for r, c in bundle_refs.items()}
        if any(len(c) != ID_SIZE for c in new_refs.values()):
            raise _bad(source, "bad commit id in the manifest")
        report = self.report
        report.session = self.session_id or old_session
        report.refs = {n: c.hex() for n, c in sorted(new_refs.items())}
        spill = Spill() if self.translate else None
        try:
            async with self.backend.gc_shared():
                await self._objects(hasher, HEADER.size + mlen, spill)
                report.objects = len(self.seen)
                for name, cid in new_refs.items():
                    if self.kinds.get(cid) != KIND_COMMIT:
                        raise _bad(source, f"ref {name} does not point at a commit in the bundle")
                await self._check_links(new_refs)
                if spill is not None:
                    await self._write_waiting(spill)
                    new_refs = {name: self.new[cid] for name, cid in new_refs.items()}
                    report.refs = {n: c.hex() for n, c in sorted(new_refs.items())}
                try:
                    await self.repo.update_refs(
                        [RefUpdate(n, c, None) for n, c in sorted(new_refs.items())],
                        message=f"import {source.name}"[:200],
                    )
                except ConflictError:
                    raise AlreadyExistsError(
                        f"session {report.session!r} (or one of its checkpoints) already exists in this store: "
                        "import it under another id (--session NEW) or remove it first (castate rm)",
                        names.session_ref(report.session) if report.session else None,
                    ) from None
        finally:
            if spill is not None:
                spill.close()
        return report

    async def _store(self) -> None:
        if self.pending:
            have = await self.backend.has_objects([oid for oid, _ in self.pending])
            new = [(oid, fr) for oid, fr in self.pending if oid not in have]
            if new:
                self.report.written += await self.backend.put_objects(new, stream=f"import {self.report.session}")
            self.pending.clear()
            self.pending_bytes = 0

    async def _add(self, oid: bytes, kind: int, content: Content) -> None:
        stored = encode_frame(kind, bytes(content), compress=self.compress)
        self.pending.append((oid, stored))
        # Counted as held, decompressed where the backend wants raw frames: a record of a few
        # bytes can stand for a 64 MiB object. Memory stays within one batch plus one object.
        self.pending_bytes += len(stored)
        if self.pending_bytes >= WRITE_BATCH:
            await self._store()

    async def _objects(self, hasher: Any, done: int, spill: Spill | None) -> None:
        """Read, verify and write (or spill) every object record, then check the trailer."""
        source = self.source
        body_left = self.size - done - TRAILER.size
        buf = bytearray()
        decomp = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
        while body_left > 0:
            chunk = await self.reader.read(min(READ_SIZE, body_left))
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
                    if oid in self.seen:  # before any work: a repeated record costs nothing to refuse
                        raise _bad(source, f"object {oid.hex()} appears twice (a bundle holds each object once)")
                    frame = bytes(buf[off + RECORD.size : off + RECORD.size + n])
                    off += RECORD.size + n
                    kind, content = self.ids.decode_frame(oid, frame)  # CorruptObjectError names it
                    children = links(oid, kind, content, deep=True)
                    if children:
                        self.edges[oid] = children
                    self.seen.add(oid)
                    self.kinds[oid] = kind
                    if spill is None:
                        await self._add(oid, kind, content)
                        continue
                    held = references(oid, kind, content)
                    if kind == KIND_COMMIT:
                        self.parents.update(held[1:])
                    if held:  # written once its children have their new ids
                        self.waiting[oid] = held
                        await spill.put(oid, frame)
                    else:
                        self.new[oid] = new = self.backend.ids.object_id(kind, content)
                        await self._add(new, kind, content)
                    del frame, content
                if off:
                    del buf[:off]
            if self.progress is not None:
                self.progress(done, self.size)
        if buf or not decomp.eof or decomp.unused_data:
            raise _bad(source, "the object stream is incomplete or has trailing bytes")
        magic, count, digest = TRAILER.unpack(await _read_exact(self.reader, TRAILER.size, source))
        if magic != TRAILER_MAGIC or digest != hasher.digest():
            raise _bad(source, "the trailer does not match the contents")
        if count != len(self.seen):
            raise _bad(source, f"the trailer counts {count} objects, the stream holds {len(self.seen)}")
        await self._store()

    async def _check_links(self, refs: dict[str, bytes]) -> None:
        """Every object pointed at is in the bundle or the store (in the bundle only, when
        translating: the store names objects otherwise), and the tree obeys the reader's rules."""
        outside = list({c for cs in self.edges.values() for c, _ in cs} - self.seen)
        if outside:
            present = set() if self.translate else await self.backend.has_objects(outside)
            if len(present) != len(outside):
                lost = next(o for o in outside if o not in present)
                where = "not in the bundle" if self.translate else "neither in the bundle nor the store"
                raise _bad(self.source, f"object {lost.hex()} is referenced but {where}")
        if self.translate:
            # A parent outside the bundle keeps its id, of the other store's scheme: it names
            # nothing here, unless the bundle was made to name this store's commits (ids are
            # readable in the files without the key), which would graft another history.
            grafted = await self.backend.has_objects(self.parents - self.seen)
            if grafted:
                raise _bad(
                    self.source,
                    f"a commit names {min(grafted).hex()} as its parent, an object of this store the bundle does "
                    "not hold: a bundle from another store cannot point into this one",
                )
        problem = await _check_tree(self.backend, set(refs.values()), self.kinds, self.edges)
        if problem is not None:
            raise _bad(self.source, f"object {problem.id.hex()} breaks the rules of a stored state: {problem.detail}")

    async def _write_waiting(self, spill: Spill) -> None:
        """Write the spilled objects children first, each with its children's new ids."""
        await spill.flush()
        order = postorder(self.waiting)
        self.waiting.clear()
        i = 0
        while i < len(order):
            j, held = i, 0
            while j < len(order) and (j == i or held + spill.size(order[j]) <= WRITE_BATCH):
                held += spill.size(order[j])
                j += 1
            part = order[i:j]
            for oid, frame in zip(part, await spill.get_many(part), strict=True):
                kind, content = self.ids.decode_frame(oid, frame)
                content = rewrite(oid, kind, content, self.new)
                self.new[oid] = new = self.backend.ids.object_id(kind, content)
                await self._add(new, kind, content)
            i = j
        await self._store()


__all__ = ["BundleReport", "export_session", "import_bundle"]
