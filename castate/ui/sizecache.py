"""The UI's cache of per-save sizes, so a restarted ``castate ui`` does not measure again.

Measuring a 10,000-save history walks every object it ever reached (seconds); what it
found is kept here, in one file per store in the user's cache directory
(``$XDG_CACHE_HOME/castate/ui``, else ``~/.cache/castate/ui``; ``CASTATE_UI_CACHE`` names
another directory, or ``off``), never in or next to the store: the UI is read-only and may
serve a store it must not write to, and a URL store has no directory at all. An encrypted
store has no cache file: its sizes would be written in the clear. The file's
name is a hash of the backend's kind, the store's id (``castate.json`` or the database's
meta) and its location, so a store's URL (which may hold a password) is never written.

What the file holds (``GrowthState``): each save's sizes with the first commit of the
history it was measured in, the walks that can be continued (the objects they had seen) and
those objects' logical sizes. Commit and object ids are content addresses, so an entry can
never describe other content; a history that changed (new saves, a restore, gc removing its
oldest saves) simply misses, is measured, and the file is written again holding only the
commits of the histories shown now.

The file is not trusted: it is read only if it is a regular file of this user of at most
``MAX_BYTES``, with the right header, the store's key and a matching checksum, and every
count and index in it is checked before anything is built from it; anything else is
ignored (and measured again). What it holds is only ever shown as numbers: no id in it is
read from the store or becomes a path.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from array import array
from pathlib import Path

from blake3 import blake3

from castate.backends.base import Backend
from castate.repository.growth import Growth, GrowthState

MAGIC = b"castate-ui-growth\n"
VERSION = 1
MAX_BYTES = 256 << 20  # a file larger than this is neither read nor written
UNKNOWN = (1 << 64) - 1  # an object seen whose size is unknown (missing or corrupt)
ID = 32
_HEAD = struct.Struct(f"<{len(MAGIC)}sI{ID}sIII")
_OBJECT = struct.Struct(f"<{ID}sQ")
_DONE = struct.Struct(f"<{ID}s{ID}sQQQB")
_WALK = struct.Struct(f"<{ID}s{ID}sI")
_SUM = ID


class CacheFileError(ValueError):
    """The cache file is not one this process wrote for this store (it is then ignored)."""


def cache_dir() -> Path | None:
    """Where the cache files go: ``CASTATE_UI_CACHE`` (``off`` or empty: nowhere), else the
    user's cache directory."""
    chosen = os.environ.get("CASTATE_UI_CACHE")
    if chosen is not None:
        return None if chosen.strip() in ("", "off") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory: no cache, sizes are measured each start
            return None
    return Path(base) / "castate" / "ui"


def store_key(backend: Backend) -> bytes | None:
    """What names the store's cache file, or None when the store has no id (a memory store)."""
    # A repository's backend is a pack store; the blob backend under it keeps the id and location.
    storage = getattr(backend, "blobs", backend)
    store_id = str(getattr(storage, "store_id", "") or "")
    if not store_id:
        return None
    root = getattr(storage, "root", None)  # a local store: the same directory however it was named
    where = str(root.resolve()) if isinstance(root, Path) else str(storage.location)
    who = "\0".join((type(storage).__name__, store_id, where))
    return blake3(b"castate-ui-growth\0" + who.encode("utf-8", "surrogatepass")).digest()


def encode(state: GrowthState, key: bytes) -> bytes:
    """The file's bytes: header, objects, saves, walks, then a checksum of all before it."""
    objects = list(state.sizes)
    at = {o: i for i, o in enumerate(objects)}
    for _, _, seen in state.walks:
        for o in seen:
            if o not in at:
                at[o] = len(objects)
                objects.append(o)
    parts = [_HEAD.pack(MAGIC, VERSION, key, len(objects), len(state.done), len(state.walks))]
    parts.append(b"".join(_OBJECT.pack(o, state.sizes.get(o, UNKNOWN)) for o in objects))
    parts.append(
        b"".join(
            _DONE.pack(base, g.commit, g.new_objects, g.new_bytes, g.logical_bytes, int(g.complete))
            for base, g in state.done
        )
    )
    for base, tip, seen in state.walks:
        parts.append(_WALK.pack(base, tip, len(seen)))
        parts.append(array("I", sorted(at[o] for o in seen)).tobytes())
    body = b"".join(parts)
    return body + blake3(body).digest()


def decode(blob: bytes, key: bytes) -> GrowthState:
    """The state a file holds, checked throughout; raises CacheFileError."""
    if len(blob) < _HEAD.size + _SUM or len(blob) > MAX_BYTES:
        raise CacheFileError("wrong size")
    body, digest = memoryview(blob)[:-_SUM], blob[-_SUM:]
    if blake3(body).digest() != digest:
        raise CacheFileError("checksum mismatch (truncated or changed)")
    magic, version, file_key, n_objects, n_done, n_walks = _HEAD.unpack_from(body, 0)
    if magic != MAGIC or version != VERSION:
        raise CacheFileError("not a castate ui cache file of this version")
    if file_key != key:
        raise CacheFileError("written for another store")
    pos = _HEAD.size
    end = pos + n_objects * _OBJECT.size + n_done * _DONE.size + n_walks * _WALK.size
    if end > len(body):
        raise CacheFileError("counts larger than the file")
    objects: list[bytes] = []
    sizes: dict[bytes, int] = {}
    for oid, size in _OBJECT.iter_unpack(body[pos : pos + n_objects * _OBJECT.size]):
        objects.append(oid)
        if size != UNKNOWN:
            sizes[oid] = size
    pos += n_objects * _OBJECT.size
    done = []
    for base, commit, new_objects, new_bytes, logical, complete in _DONE.iter_unpack(
        body[pos : pos + n_done * _DONE.size]
    ):
        if complete not in (0, 1):
            raise CacheFileError("bad save entry")
        done.append((base, Growth(commit, new_objects, new_bytes, logical, bool(complete))))
    pos += n_done * _DONE.size
    walks = []
    for _ in range(n_walks):
        if pos + _WALK.size > len(body):
            raise CacheFileError("walk past the end")
        base, tip, count = _WALK.unpack_from(body, pos)
        pos += _WALK.size
        if pos + 4 * count > len(body):
            raise CacheFileError("walk past the end")
        indices = array("I")
        indices.frombytes(body[pos : pos + 4 * count])
        pos += 4 * count
        if count and max(indices) >= len(objects):
            raise CacheFileError("walk names an object the file does not hold")
        walks.append((base, tip, {objects[i] for i in indices}))
    if pos != len(body):
        raise CacheFileError("bytes after the last walk")
    return GrowthState(done, walks, sizes)


class SizeCache:
    """One store's cache file: ``load`` and ``save`` are blocking (run them in a thread);
    neither raises for a missing, foreign or damaged file, and ``note`` says what went wrong
    last (shown by the page, so nothing fails silently)."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self.path = directory / f"{key.hex()[:32]}.growth"
        self.key = key
        self.note: str | None = None

    @classmethod
    def for_backend(cls, backend: Backend, directory: Path | None = None) -> SizeCache | None:
        """The cache of ``backend``'s store in ``directory`` (default ``cache_dir()``), or None
        when there is nowhere to keep it."""
        if getattr(backend, "keys", None) is not None:
            # An encrypted store: the sizes of its saves are not written outside it, in the
            # clear (they are measured again at each start).
            return None
        directory = directory if directory is not None else cache_dir()
        key = store_key(backend)
        if directory is None or key is None:
            return None
        return cls(directory, key)

    def load(self) -> GrowthState | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.note = f"size cache {self.path} not read: {exc.strerror or exc}"
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > MAX_BYTES:
                self.note = f"size cache {self.path} ignored: not a regular file of this user within {MAX_BYTES} bytes"
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                blob = f.read(MAX_BYTES + 1)
            return decode(blob, self.key)
        except CacheFileError as exc:
            self.note = f"size cache {self.path} ignored ({exc}): sizes are measured again"
            return None
        except OSError as exc:
            self.note = f"size cache {self.path} not read: {exc.strerror or exc}"
            return None
        finally:
            os.close(fd)

    def save(self, state: GrowthState) -> None:
        """Write the file whole (a new file renamed over the old one, readable by this user
        only); a state too large for ``MAX_BYTES`` is written without its walks."""
        blob = encode(state, self.key)
        if len(blob) > MAX_BYTES:
            blob = encode(GrowthState(state.done, [], {}), self.key)
            if len(blob) > MAX_BYTES:
                self.note = f"size cache not written: over {MAX_BYTES} bytes"
                return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.stat(self.directory)
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                self.note = f"size cache not written: {self.directory} is not this user's alone"
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".growth-")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
            self.note = None
        except OSError as exc:
            self.note = f"size cache {self.path} not written: {exc.strerror or exc}"


__all__ = ["MAX_BYTES", "CacheFileError", "SizeCache", "cache_dir", "decode", "encode", "store_key"]
