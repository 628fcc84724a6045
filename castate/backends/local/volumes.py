"""Volume files: the local store's blobs, each appended as one framed record to a numbered file.

A record carries its blob's name, length and blake3, so damage is found and named without
the journal, and a lost journal could be rebuilt from the volumes. The journal holds each
live blob's *place* (volume, offset, length, write time). Volumes are append-only: a record
never moves while it is live; gc copies the live records of a mostly-dead volume into a new
volume and then removes the old file. docs/format.md §3.4 has the bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import struct
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import blake3

from castate.backends.local import crashpoints, osio
from castate.backends.local.files import FILE_MODE, fsync_dir, naming, open_regular, write_all
from castate.errors import CorruptFileError, UnsupportedFormatError

MAGIC = b"CASTVOL\x00"
VERSION = 1
HEADER = MAGIC + bytes((VERSION,)) + bytes(7)
REC_MAGIC = b"CBLB"
DEAD_MAGIC = b"DEAD"  # written over the magic of a deleted blob's record
_REC = struct.Struct("<4sHQ32s")  # magic, name length, data length, blake3 of the data
_PLACE = struct.Struct("<IQQQ4x")  # volume, record offset, data length, write time (ns)
PLACE_SIZE = _PLACE.size  # 32: a place fits the journal's value slot
MAX_BLOB = 1 << 30  # a place claiming more is damage: castate never writes blobs that large
SUFFIX = ".vol"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a blob's record starts, and the blob's length and write time."""

    volume: int
    offset: int
    size: int
    time_ns: int

    def pack(self) -> bytes:
        return _PLACE.pack(self.volume, self.offset, self.size, self.time_ns)

    @classmethod
    def unpack(cls, raw: bytes) -> Place:
        return cls(*_PLACE.unpack(raw))


BLOCK = 4096
_PUNCH_HOLE = 0x02  # FALLOC_FL_PUNCH_HOLE (linux/falloc.h)
_KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE


def _libc_fallocate() -> Callable[[int, int, int, int], None] | None:
    """fallocate(2) through libc (the standard library has no call for punching holes), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        raw = libc.fallocate
    except (OSError, AttributeError):
        return None
    raw.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    raw.restype = ctypes.c_int

    def call(fd: int, mode: int, offset: int, length: int) -> None:
        raw(fd, mode, offset, length)  # a file system without holes (EOPNOTSUPP) keeps the bytes: no harm

    return call


_fallocate = _libc_fallocate()


def volume_name(number: int) -> str:
    return f"{number:08d}{SUFFIX}"


def volume_number(filename: str) -> int | None:
    stem = filename[: -len(SUFFIX)]
    if not filename.endswith(SUFFIX) or len(stem) != 8 or not stem.isdigit():
        return None
    return int(stem)


def record_size(name: str, place: Place) -> int:
    """Bytes of the blob's record in its volume."""
    return _REC.size + len(name) + place.size


def encode_record(name: str, data: bytes) -> bytes:
    raw = name.encode("ascii")
    return _REC.pack(REC_MAGIC, len(raw), len(data), blake3.blake3(data).digest()) + raw + data


class Volumes:
    """The volume files of one store: cached read descriptors, and appends under the caller's lock."""

    def __init__(self, directory: Path, durable: bool, max_size: int) -> None:
        self.dir = directory
        self.durable = durable
        self.max_size = max_size
        self._fds: dict[int, int] = {}

    def path(self, number: int) -> Path:
        return self.dir / volume_name(number)

    def numbers(self) -> list[int]:
        """The volumes on disk, in order."""
        found = (volume_number(e.name) for e in os.scandir(self.dir))
        return sorted(n for n in found if n is not None)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def keep_open(self, numbers: Collection[int]) -> None:
        """Close the cached descriptors of volumes other than ``numbers`` (those with live
        blobs): a volume another process emptied and unlinked gives its space back."""
        for number in [n for n in self._fds if n not in numbers]:
            self.forget(number)

    def forget(self, number: int) -> None:
        """Drop the cached descriptor of a volume gc removed (or that may have been replaced)."""
        fd = self._fds.pop(number, None)
        if fd is not None:
            os.close(fd)

    def _fd(self, number: int) -> int:
        fd = self._fds.get(number)
        if fd is None:
            path = self.path(number)
            fd = open_regular(path)  # FileNotFoundError when gc removed it
            head = os.pread(fd, len(HEADER), 0)
            if head[:8] != MAGIC or len(head) < len(HEADER):
                os.close(fd)
                raise CorruptFileError(str(path), "not a castate volume (bad header)")
            if head[8] > VERSION:
                os.close(fd)
                raise UnsupportedFormatError(f"{path} has volume version {head[8]}; this castate reads {VERSION}")
            self._fds[number] = fd
        return fd

    # -- reading ----------------------------------------------------------------------------

    def read(self, name: str, place: Place, *, verify: bool = False) -> bytes:
        """The blob's bytes, after checking that its record frames this name and length (and,
        with ``verify``, its blake3). CorruptFileError names the volume and the blob."""
        raw = name.encode("ascii")
        head = _REC.size + len(raw)
        if place.size > MAX_BLOB or place.offset < len(HEADER):
            raise self._damage(name, place, f"its place claims {place.size} bytes at offset {place.offset}")
        buf = self._pread(place.volume, head + place.size, place.offset)
        if len(buf) < head + place.size:
            raise self._damage(name, place, "the volume ends inside its record")
        magic, nlen, size, digest = _REC.unpack_from(buf, 0)
        if magic != REC_MAGIC or nlen != len(raw) or size != place.size or buf[_REC.size : head] != raw:
            raise self._damage(name, place, "the record there frames another blob")
        data = buf[head:]
        if verify and blake3.blake3(data).digest() != digest:
            raise self._damage(name, place, "its bytes fail their blake3 check")
        return data

    def read_range(self, name: str, place: Place, offset: int, length: int) -> bytes:
        """Bytes ``offset`` to ``offset + length`` of the blob (fewer at its end); the record's frame is checked."""
        raw = name.encode("ascii")
        head = _REC.size + len(raw)
        frame = self._pread(place.volume, head, place.offset)
        if len(frame) < head:
            raise self._damage(name, place, "the volume ends inside its record")
        magic, nlen, size, _ = _REC.unpack_from(frame, 0)
        if magic != REC_MAGIC or nlen != len(raw) or size != place.size or frame[_REC.size :] != raw:
            raise self._damage(name, place, "the record there frames another blob")
        start = min(offset, place.size)
        stop = min(place.size, offset + length)
        return self._pread(place.volume, stop - start, place.offset + head + start)

    def salvage(self, number: int) -> list[tuple[str, Place]]:
        """Every record of a volume whose frame and blake3 hold, found by its magic (damaged
        bytes are skipped): what a repair can place again when the journal lost its records."""
        path = self.path(number)
        fd = open_regular(path)
        try:
            size = os.fstat(fd).st_size
            when = os.fstat(fd).st_mtime_ns
            if size <= len(HEADER):
                return []
            # Mapped, not read: a volume of any size is scanned in the page cache, not in memory.
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
                return _salvage(data, number, when)
        finally:
            os.close(fd)

    def kill(self, place: Place) -> None:
        """Overwrite a dead record's magic, after the journal record that removed its place is
        durable: a repair never finds it again, and a reader that still holds its place gets a
        frame error (and replays the journal) instead of stale or punched-out bytes."""
        try:
            fd = osio.open_fd(self.path(place.volume), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # gone with its volume
        try:
            os.pwrite(fd, DEAD_MAGIC, place.offset)
        finally:
            os.close(fd)

    def _pread(self, number: int, size: int, offset: int) -> bytes:
        fd = self._fd(number)
        parts = []
        while size > 0:
            chunk = os.pread(fd, min(size, 1 << 26), offset)
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return b"".join(parts)

    def _damage(self, name: str, place: Place, why: str) -> CorruptFileError:
        return CorruptFileError(str(self.path(place.volume)), f"blob {name} at offset {place.offset}: {why}")

    # -- writing (the caller holds the journal lock: one appender at a time) -----------------

    def append(self, items: Sequence[tuple[str, bytes]], time_ns: int, *, fresh: bool = False) -> list[Place]:
        """Append the blobs to the newest volume (a new one past ``max_size``, or with ``fresh``)
        and make them durable; their places, in order."""
        numbers = self.numbers()
        number = numbers[-1] if numbers else 0
        st = os.lstat(self.path(number)) if numbers else None
        # A volume shorter than its header lost its creator before it was written, and anything
        # but a regular file was put there by someone else: never append there (a clean-up
        # removes such a volume once a newer one exists).
        if st is None or fresh or st.st_size >= self.max_size or st.st_size < len(HEADER) or not S_ISREG(st.st_mode):
            number = self._create(number + 1)
        path = self.path(number)
        with naming(path):
            fd = osio.open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            try:
                offset = os.fstat(fd).st_size  # after any torn record a crashed writer left
                places = []
                records = []
                for name, data in items:
                    places.append(Place(number, offset, len(data), time_ns))
                    records.append(encode_record(name, data))
                    offset += len(records[-1])
                data = b"".join(records)
                crashpoints.tear("volume-mid-record", fd, data)
                write_all(fd, data)
                crashpoints.reach("volume-before-sync")
                if self.durable:
                    osio.fdatasync(fd)
            finally:
                os.close(fd)
        crashpoints.reach("volume-after-sync")
        return places

    def _create(self, number: int) -> int:
        """A new, empty volume numbered at least ``number`` (created exclusively, header durable)."""
        while True:
            path = self.path(number)
            try:
                fd = osio.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                number += 1
                continue
            try:
                with naming(path):
                    crashpoints.reach("volume-created")
                    write_all(fd, HEADER)
                    if self.durable:
                        osio.fdatasync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    osio.unlink(path)  # a volume without its header is never appended to: remove it
                raise
            finally:
                os.close(fd)
            if self.durable:
                fsync_dir(self.dir)
            return number

    def remove(self, numbers: Sequence[int]) -> None:
        """Unlink volumes that hold no live blob (gc, after the journal moved every place away)."""
        for number in numbers:
            self.forget(number)
            crashpoints.reach("gc-before-unlink")
            with contextlib.suppress(FileNotFoundError):
                osio.unlink(self.path(number))
        if numbers and self.durable:
            fsync_dir(self.dir)

    def punch(self, name: str, place: Place) -> None:
        """Give the disk blocks of a dead record back at once (Linux: a hole punched over the
        whole blocks inside it; the file keeps its length and other records). Elsewhere, or on
        a file system without holes, the bytes wait for gc to move the volume's live records."""
        start = -(-place.offset // BLOCK) * BLOCK
        stop = (place.offset + _REC.size + len(name.encode("ascii")) + place.size) // BLOCK * BLOCK
        if stop <= start or _fallocate is None:
            return
        try:
            fd = osio.open_fd(self.path(place.volume), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # gone with its volume
        try:
            _fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, start, stop - start)
        finally:
            os.close(fd)

    def size(self, number: int) -> int:
        try:
            return os.stat(self.path(number)).st_size
        except FileNotFoundError:
            return 0

    def allocated(self, number: int) -> int:
        """The disk bytes the volume takes (less than its size where dead records were punched out)."""
        try:
            return os.stat(self.path(number)).st_blocks * 512
        except FileNotFoundError:
            return 0


def _salvage(data: mmap.mmap, number: int, when: int) -> list[tuple[str, Place]]:
    """The intact records of a mapped volume, found by magic; damaged bytes are skipped."""
    found: list[tuple[str, Place]] = []
    pos = data.find(REC_MAGIC, len(HEADER))
    while pos >= 0:
        nxt = pos + 1
        if pos + _REC.size <= len(data):
            _, nlen, dlen, digest = _REC.unpack_from(data, pos)
            start = pos + _REC.size + nlen
            if start + dlen <= len(data):
                raw = data[pos + _REC.size : start]
                if blake3.blake3(data[start : start + dlen]).digest() == digest and raw.isascii():
                    found.append((raw.decode("ascii"), Place(number, pos, dlen, when)))
                    nxt = start + dlen
        pos = data.find(REC_MAGIC, nxt)
    return found
