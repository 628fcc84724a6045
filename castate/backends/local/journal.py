"""The ref journal: every ref change of a local store, appended to one file.

The journal is both the refs and the reflog. Replaying it gives each ref's current
target; its records are the history. A record holds one atomic group of updates and is
framed by magic, length and CRC, so a record torn by a crash is recognised and ignored.
Writers append under an exclusive lock after checking compare-and-swap expectations
against the replayed state; readers replay new records without a lock.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import blake3

from castate.backends.base import ReflogEntry, RefRepairReport, RefUpdate, plan_ref_updates
from castate.backends.local import crashpoints, osio, refsnap
from castate.backends.local.files import FILE_MODE, atomic_write, naming, store_dir, write_all
from castate.backends.local.locks import FileLock
from castate.errors import CorruptFileError, NotFoundError, UnsupportedFormatError

MAGIC = b"CASTREFS"
VERSION = 1
HEADER_SIZE = 32  # magic, version, 7 reserved bytes, 16-byte generation
REC_MAGIC = b"CREF"
KIND_UPDATE = 0
KIND_SNAPSHOT = 1  # replaces every ref (written by compaction)
MAX_RECORD = 64 << 20
SNAPSHOT_NAME = "refs.snapshot"
SNAPSHOT_MIN_TAIL = 64 << 10  # journal bytes after the snapshot before a writer rewrites it
REPAIR_HINT = " (run `castate fsck --repair-refs` to rebuild it from its intact records)"

T = TypeVar("T")
Change = tuple[str, bytes | None, bytes | None]  # (name, old value, new value); None: absent

_REC_HEAD = struct.Struct("<4sI")
_PAYLOAD_HEAD = struct.Struct("<BQQH")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    seq: int
    time_ns: int
    message: str
    changes: tuple[tuple[str, bytes | None, bytes | None], ...]


def encode_record(rec: Record) -> bytes:
    msg = rec.message.encode("utf-8", "replace")[:65535]
    parts = [_PAYLOAD_HEAD.pack(rec.kind, rec.seq, rec.time_ns, len(msg)), msg, _U32.pack(len(rec.changes))]
    for name, old, new in rec.changes:
        raw = name.encode("ascii")
        parts.append(_U16.pack(len(raw)) + raw + bytes(((old is not None) | ((new is not None) << 1),)))
        if old is not None:
            parts.append(old)
        if new is not None:
            parts.append(new)
    payload = b"".join(parts)
    return _REC_HEAD.pack(REC_MAGIC, len(payload)) + payload + _U32.pack(zlib.crc32(payload))


def decode_payload(payload: bytes | memoryview) -> Record:
    kind, seq, t, mlen = _PAYLOAD_HEAD.unpack_from(payload, 0)
    off = _PAYLOAD_HEAD.size
    message = bytes(payload[off : off + mlen]).decode("utf-8", "replace")
    off += mlen
    (n,) = _U32.unpack_from(payload, off)
    off += 4
    changes = []
    for _ in range(n):
        (nlen,) = _U16.unpack_from(payload, off)
        off += 2
        name = bytes(payload[off : off + nlen]).decode("ascii")
        off += nlen
        flags = payload[off]
        off += 1
        old = new = None
        if flags & 1:
            old = bytes(payload[off : off + 32])
            off += 32
        if flags & 2:
            new = bytes(payload[off : off + 32])
            off += 32
        if (old is not None and len(old) != 32) or (new is not None and len(new) != 32):
            raise ValueError("truncated id")
        changes.append((name, old, new))
    if off != len(payload) or kind not in (KIND_UPDATE, KIND_SNAPSHOT):
        raise ValueError("malformed record")
    return Record(kind, seq, t, message, tuple(changes))


def scan(buf: bytes, start: int) -> tuple[list[Record], int, bool]:
    """Records from ``start``; the offset after the last good one; whether bytes remain after it.

    Raises ValueError when a bad record is followed by a good one, or when the last record is
    whole but fails its check: damage, not a torn tail. A writer that dies mid-append leaves a
    strict prefix of its record (shorter than its length field says), never a whole bad one.
    """
    records: list[Record] = []
    off = start
    end = len(buf)
    while off < end:
        rec = _record_at(buf, off)
        if rec is None:
            if _good_record_after(buf, off + 1) or _whole_but_bad(buf, off):
                raise ValueError(f"damaged record at offset {off}")
            return records, off, True
        records.append(rec[0])
        off = rec[1]
    return records, off, False


def _record_at(buf: bytes, off: int) -> tuple[Record, int] | None:
    if off + _REC_HEAD.size > len(buf):
        return None
    magic, size = _REC_HEAD.unpack_from(buf, off)
    body = off + _REC_HEAD.size
    stop = body + size + 4
    if magic != REC_MAGIC or size > MAX_RECORD or stop > len(buf):
        return None
    payload = memoryview(buf)[body : body + size]
    if _U32.unpack_from(buf, body + size)[0] != zlib.crc32(payload):
        return None
    try:
        return decode_payload(payload), stop
    except (ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None


def _whole_but_bad(buf: bytes, off: int) -> bool:
    """Whether the bytes at ``off`` frame a whole record (magic, length within the file) that failed its checks."""
    if off + _REC_HEAD.size > len(buf):
        return False
    magic, size = _REC_HEAD.unpack_from(buf, off)
    return bool(magic == REC_MAGIC and size <= MAX_RECORD and off + _REC_HEAD.size + size + 4 <= len(buf))


def _good_record_after(buf: bytes, off: int) -> bool:
    return _next_good_record(buf, off) is not None


def _next_good_record(buf: bytes, off: int) -> int | None:
    while True:
        off = buf.find(REC_MAGIC, off)
        if off < 0:
            return None
        if _record_at(buf, off) is not None:
            return off
        off += 1


def _names_in(data: bytes) -> list[str]:
    """Ref names that unreadable bytes seem to hold (for a report; never applied)."""
    found = []
    for prefix in (b"sessions/", b"checkpoints/", b"kv/", b"langgraph/"):
        pos = data.find(prefix)
        while pos >= 0:
            end = pos
            while end < len(data) and 0x21 <= data[end] < 0x7F:
                end += 1
            found.append(data[pos:end].decode("ascii"))
            pos = data.find(prefix, end)
    return sorted(set(found))


def salvage(buf: bytes) -> tuple[list[Record], list[tuple[int, int]]]:
    """Every intact record of a journal's bytes, in file order, and the byte spans that held
    none (a damaged header included). Intact records are found by magic, length and CRC."""
    records: list[Record] = []
    damaged: list[tuple[int, int]] = []
    if len(buf) < HEADER_SIZE or buf[:8] != MAGIC:
        damaged.append((0, min(len(buf), HEADER_SIZE)))
    off = HEADER_SIZE
    while off < len(buf):
        rec = _record_at(buf, off)
        if rec is not None:
            records.append(rec[0])
            off = rec[1]
            continue
        nxt = _next_good_record(buf, off + 1)
        damaged.append((off, len(buf) if nxt is None else nxt))
        if nxt is None:
            break
        off = nxt
    return records, damaged


def rebuild(found: list[Record]) -> tuple[list[Record], int, dict[str, tuple[bytes | None, bytes | None]]]:
    """A consistent journal from salvaged records: renumbered, with a record standing in for
    each change that lost records made and a later record shows (its ``old`` differs from the
    replayed value). Returns the records, how many records are known lost, and those changes."""
    out: list[Record] = []
    refs: dict[str, bytes] = {}
    lost = 0
    inferred: dict[str, tuple[bytes | None, bytes | None]] = {}
    prev_seq = 0  # sequence numbers start at 1 (a compacted journal starts with its snapshot)
    for rec in found:
        if rec.seq > prev_seq + 1:
            lost += rec.seq - prev_seq - 1
        prev_seq = rec.seq
        if rec.kind == KIND_SNAPSHOT:
            refs = {name: new for name, _, new in rec.changes if new is not None}
            out.append(Record(KIND_SNAPSHOT, len(out) + 1, rec.time_ns, rec.message, rec.changes))
            continue
        missing = tuple((name, refs.get(name), old) for name, old, _ in rec.changes if refs.get(name) != old)
        if missing:
            for name, before, after in missing:
                inferred[name] = (before, after)
            out.append(Record(KIND_UPDATE, len(out) + 1, rec.time_ns, "repair: change(s) of a lost record", missing))
            refs.update({n: v for n, _, v in missing if v is not None})
            for n, _, v in missing:
                if v is None:
                    refs.pop(n, None)
        out.append(Record(KIND_UPDATE, len(out) + 1, rec.time_ns, rec.message, rec.changes))
        for name, _, new in rec.changes:
            if new is None:
                refs.pop(name, None)
            else:
                refs[name] = new
    return out, lost, inferred


class RefJournal:
    """Refs and reflog of one local store, replayed from ``refs.journal``."""

    def __init__(self, path: Path, lock: FileLock, durable: bool = True) -> None:
        self.path = path
        self.lock = lock
        self.durable = durable
        self.refs: dict[str, bytes] = {}
        self.count = 0  # records replayed (kept in the file, not in memory: reflog() reads them)
        self._seq = 0
        self._offset = 0
        self._ino: int | None = None
        self._generation = b""
        self.snapshot_path = path.with_name(SNAPSHOT_NAME)
        self._snap_offset = HEADER_SIZE  # journal bytes the newest snapshot known here covers
        self._snap_size = 0  # refs in it
        self._from_snapshot = False  # the current replay started from a snapshot
        # Told of every change as it is replayed, and of every wholesale replacement of the
        # entries (a reset, a snapshot): the local blob store keeps its volume usage with them.
        self.on_change: Callable[[str, bytes | None, bytes | None], None] | None = None
        self.on_reload: Callable[[dict[str, bytes]], None] | None = None

    # -- reading ------------------------------------------------------------------------

    def create(self) -> None:
        """Write an empty journal if there is none (called under the store's init)."""
        atomic_write(self.path, self._header(os.urandom(16)), durable=self.durable, exclusive=True)

    @staticmethod
    def _header(generation: bytes) -> bytes:
        return MAGIC + bytes((VERSION,)) + bytes(7) + generation

    def refresh(self) -> bool:
        """Replay records appended since the last call; True if a torn tail was left unread.

        A fresh replay (first call, or a new journal file) starts from ``refs.snapshot`` when
        that matches this journal; if the tail after it does not replay cleanly, the journal is
        replayed again from its first record, so the snapshot never decides the outcome."""
        try:
            return self._refresh(use_snapshot=True)
        except CorruptFileError:
            if not self._from_snapshot:
                raise
            self._ino = None
            return self._refresh(use_snapshot=False)
        finally:
            self._from_snapshot = False

    def _open(self) -> tuple[int, os.stat_result, bytes]:
        """The journal opened for reading, its stat and its header bytes."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CorruptFileError(str(self.path), "the ref journal is missing") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptFileError(str(self.path), "a symlink: castate follows no link in a store") from None
            raise
        try:
            return fd, os.fstat(fd), os.pread(fd, HEADER_SIZE, 0)
        except BaseException:
            os.close(fd)
            raise

    def _refresh(self, use_snapshot: bool) -> bool:
        fd, st, head = self._open()
        try:
            self._check_header(head)
            if head[16:32] != self._generation or st.st_ino != self._ino:
                self._reset(st.st_ino, head[16:32])
                if use_snapshot:
                    self._start_from_snapshot(fd, st.st_size)
            if st.st_size < self._offset:
                raise CorruptFileError(str(self.path), f"the ref journal shrank{REPAIR_HINT}")
            if st.st_size == self._offset:
                return False
            buf = _read_from(fd, self._offset, st.st_size)
        finally:
            os.close(fd)
        try:
            records, used, leftover = scan(buf, 0)
        except ValueError as exc:
            raise CorruptFileError(str(self.path), f"{exc}{REPAIR_HINT}") from None
        if leftover and self._from_snapshot and not records:
            # A torn tail right after the snapshot: check it against a full replay before any
            # writer drops it.
            raise CorruptFileError(str(self.path), "the tail after refs.snapshot does not replay")
        for rec in records:
            self._apply(rec)
        self._offset += used
        return leftover

    def _start_from_snapshot(self, fd: int, size: int) -> None:
        """Take the refs from ``refs.snapshot`` if it belongs to this journal as it is now."""
        snap = refsnap.load(self.snapshot_path)
        if (
            snap is None
            or snap.generation != self._generation
            or not HEADER_SIZE <= snap.last_start < snap.offset <= size
        ):
            return
        last = os.pread(fd, snap.offset - snap.last_start, snap.last_start)
        if blake3.blake3(last).digest() != snap.last_hash:
            return
        self.refs = snap.refs
        if self.on_reload is not None:
            self.on_reload(self.refs)
        self.count = snap.count
        self._seq = snap.seq
        self._offset = self._snap_offset = snap.offset
        self._snap_size = len(snap.refs)
        self._from_snapshot = True

    def _check_header(self, head: bytes) -> None:
        if len(head) < HEADER_SIZE or head[:8] != MAGIC:
            raise CorruptFileError(str(self.path), f"bad header{REPAIR_HINT}")
        if head[8] > VERSION:
            raise UnsupportedFormatError(f"{self.path} has ref journal version {head[8]}; this castate reads {VERSION}")

    def _reset(self, ino: int, generation: bytes) -> None:
        self.refs = {}
        self.count = 0
        self._seq = 0
        self._offset = HEADER_SIZE
        self._ino = ino
        self._generation = generation
        self._snap_offset = HEADER_SIZE
        self._snap_size = 0
        self._from_snapshot = False
        if self.on_reload is not None:
            self.on_reload(self.refs)

    def _apply(self, rec: Record) -> None:
        if self.count and rec.seq != self._seq + 1:
            raise CorruptFileError(
                str(self.path), f"record {rec.seq} follows {self._seq}: records are missing{REPAIR_HINT}"
            )
        if rec.kind == KIND_SNAPSHOT:
            self.refs = {name: new for name, _, new in rec.changes if new is not None}
            if self.on_reload is not None:
                self.on_reload(self.refs)
        else:
            for name, old, new in rec.changes:
                if self.refs.get(name) != old:
                    raise CorruptFileError(
                        str(self.path), f"record {rec.seq} does not follow the state of {name}{REPAIR_HINT}"
                    )
                if new is None:
                    self.refs.pop(name, None)
                else:
                    self.refs[name] = new
                if self.on_change is not None:
                    self.on_change(name, old, new)
        self.count += 1
        self._seq = rec.seq

    @property
    def records(self) -> list[Record]:
        """Every replayed record, read again from the file (they are not kept in memory)."""
        while True:
            fd, st, head = self._open()
            try:
                if head[16:32] == self._generation and st.st_ino == self._ino and st.st_size >= self._offset:
                    buf = _read_from(fd, HEADER_SIZE, self._offset)
                    break
            finally:
                os.close(fd)
            self.refresh()  # replaced since the last replay: replay the new file, then read it
        try:
            records, used, _ = scan(buf, 0)
        except ValueError as exc:
            raise CorruptFileError(str(self.path), f"{exc}{REPAIR_HINT}") from None
        if len(records) != self.count or used != len(buf):
            raise CorruptFileError(str(self.path), f"the ref journal changed under a reader{REPAIR_HINT}")
        return records

    def verify(self) -> int:
        """Read and check every record (an open from a snapshot skips those it covers); their number."""
        return len(self.records)

    def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        out = []
        for rec in self.records:
            if rec.kind != KIND_UPDATE:
                continue
            for n, old, new in rec.changes:
                if name is None or n == name:
                    out.append(ReflogEntry(n, old, new, rec.time_ns, rec.message))
        return out

    # -- writing ------------------------------------------------------------------------

    def update(self, updates: Sequence[RefUpdate], message: str) -> None:
        """Check and append one atomic group of updates (takes the journal lock)."""
        with self.lock.hold(exclusive=True):
            if self.refresh():
                self._rewrite(self.records)  # a crashed writer left a torn record: drop it
            self._append(plan_ref_updates(self.refs, updates), message)

    def apply(self, plan: Callable[[dict[str, bytes]], tuple[list[Change], T]], message: str) -> T:
        """Append the changes ``plan`` makes from the current refs, as one record (takes the lock).

        ``plan`` runs under the lock with the refs replayed to the end, so what it checks stays
        true until its changes are appended; it may write other files first (the local blob
        store appends blobs to a volume there), and raises to append nothing."""
        with self.lock.hold(exclusive=True):
            if self.refresh():
                self._rewrite(self.records)
            changes, result = plan(self.refs)
            self._append(changes, message)
            return result

    def _append(self, changes: list[tuple[str, bytes | None, bytes | None]], message: str) -> None:
        """Append one record (the caller holds the lock and has refreshed)."""
        if not changes:
            return
        rec = Record(KIND_UPDATE, self._seq + 1, time.time_ns(), message, tuple(changes))
        data = encode_record(rec)
        written = False
        try:
            with naming(self.path):
                fd = osio.open_fd(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
                try:
                    crashpoints.tear("journal-mid-record", fd, data)
                    write_all(fd, data)
                    written = True
                    crashpoints.reach("journal-before-sync")
                    if self.durable:
                        osio.fdatasync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            self._undo_append(exc, written)
            raise
        start = self._offset
        self._apply(rec)
        self._offset += len(data)
        crashpoints.reach("journal-after-sync")
        self._maybe_snapshot(start, data)

    def _maybe_snapshot(self, last_start: int, last: bytes) -> None:
        """Rewrite ``refs.snapshot`` once the tail after it is a quarter of its size (at least
        ``SNAPSHOT_MIN_TAIL`` bytes): an open then replays a bounded tail, and the snapshot
        costs a few bytes written per journal byte. Failing to write it only costs speed."""
        tail = self._offset - self._snap_offset
        if tail < max(SNAPSHOT_MIN_TAIL, self._snap_size * 24):
            return
        snap = refsnap.Snapshot(
            self._generation, self._offset, last_start, self._seq, self.count, blake3.blake3(last).digest(), self.refs
        )
        try:
            refsnap.write(self.snapshot_path, snap)
        except OSError:
            return
        self._snap_offset = self._offset
        self._snap_size = len(self.refs)

    def _undo_append(self, exc: OSError, written: bool) -> None:
        """After a failed append, rewrite the journal without the record (whole or torn), so the
        refs stay as they were and the caller's error is the truth. Readers that saw the record
        replay the new file. If even that fails, a torn record stays unread; a whole one is
        visible though not durable, and the error says the outcome is unknown."""
        try:
            if os.stat(self.path).st_size > self._offset:
                self._rewrite(self.records)
        except OSError:
            if written:
                exc.strerror = (
                    f"{exc.strerror} (the ref update was written but could not be made durable nor undone: "
                    "it may show; reload the refs to see)"
                )

    def copy(self, source: str, target: str, expected: bytes | object | None, message: str) -> bytes:
        """Point ``target`` at ``source``'s value in one locked step; NotFoundError without a source."""
        with self.lock.hold(exclusive=True):
            if self.refresh():
                self._rewrite(self.records)
            value = self.refs.get(source)
            if value is None:
                raise NotFoundError(f"no ref {source}")
            self._append(plan_ref_updates(self.refs, [RefUpdate(target, value, expected)]), message)  # type: ignore[arg-type]
            return value

    def compact(self, keep_since_ns: int | None) -> int:
        """Rewrite the journal: current refs plus records newer than ``keep_since_ns``.

        Returns how many records were dropped. Readers notice the new file and replay it.
        """
        with self.lock.hold(exclusive=True):
            self.refresh()
            if keep_since_ns is None:
                return 0
            records = self.records
            keep_from = len(records)
            while keep_from > 0 and records[keep_from - 1].time_ns >= keep_since_ns:
                keep_from -= 1
            if keep_from == 0:
                return 0
            base = _replay(records[:keep_from])
            snapshot = Record(
                KIND_SNAPSHOT,
                1,
                time.time_ns(),
                "compacted",
                tuple((n, None, v) for n, v in sorted(base.items())),
            )
            kept = [snapshot]
            for i, rec in enumerate(records[keep_from:], 2):
                kept.append(Record(rec.kind, i, rec.time_ns, rec.message, rec.changes))
            self._rewrite(kept)
            return keep_from

    def drop_history(self, hidden: str) -> int:
        """Rewrite the journal without the past changes of entries whose names start with
        ``hidden``: their current values move into the leading snapshot record, and every other
        change stays, in order, with its time and message. Returns how many records went.

        The local blob store drops the history of its blob places this way (the reflog shows
        refs only). Readers notice the new generation and replay the new file."""
        with self.lock.hold(exclusive=True):
            if self.refresh():
                self._rewrite(self.records)
            records = self.records
            base: dict[str, bytes] = {}
            if records and records[0].kind == KIND_SNAPSHOT:
                base = {n: v for n, _, v in records[0].changes if v is not None and not n.startswith(hidden)}
                records = records[1:]
            if any(rec.kind == KIND_SNAPSHOT for rec in records):
                return 0  # only compaction writes one, first: anything else is left as it is
            base.update((n, v) for n, v in self.refs.items() if n.startswith(hidden))
            kept = [
                Record(
                    KIND_SNAPSHOT, 1, time.time_ns(), "compacted", tuple((n, None, v) for n, v in sorted(base.items()))
                )
            ]
            for rec in records:
                changes = tuple(c for c in rec.changes if not c[0].startswith(hidden))
                if changes:
                    kept.append(Record(rec.kind, len(kept) + 1, rec.time_ns, rec.message, changes))
            dropped = len(records) + 1 - len(kept)
            self._rewrite(kept)
            return dropped

    def repair(self, quarantine: Path) -> RefRepairReport:
        """Rebuild a damaged journal from its intact records (under the lock): the damaged file
        is kept in ``quarantine`` first, then replaced. A journal that replays cleanly is left
        as it is (a torn last record is dropped, as any writer would)."""
        with self.lock.hold(exclusive=True):
            try:
                buf = self.path.read_bytes()
            except FileNotFoundError:
                raise CorruptFileError(
                    str(self.path), "the ref journal is missing: there is nothing to rebuild refs from"
                ) from None
            report = RefRepairReport(str(self.path), damaged=False)
            try:
                self._ino = None
                if self._refresh(use_snapshot=False):  # every record: the snapshot would skip damage
                    self._rewrite(self.records)
                report.kept, report.refs = self.count, len(self.refs)
                return report
            except CorruptFileError:
                pass
            found, spans = salvage(buf)
            records, lost, inferred = rebuild(found)
            report.damaged = True
            report.kept = len(found)
            report.damaged_spans = spans
            # A whole record that fails its checks at the end is lost too (a torn one was never acknowledged).
            tail = spans[-1][0] if spans and spans[-1][1] == len(buf) else None
            report.lost_records = lost + (1 if tail is not None and _whole_but_bad(buf, tail) else 0)
            report.inferred = inferred
            report.maybe_lost = _names_in(b"".join(buf[a:b] for a, b in spans))
            store_dir(quarantine)
            kept = quarantine / f"{self.path.name}.{time.time_ns()}.damaged"
            atomic_write(kept, buf, durable=self.durable)
            report.saved_as = str(kept)
            self._rewrite(records)
            report.refs = len(self.refs)
            return report

    def _rewrite(self, records: list[Record]) -> None:
        data = self._header(os.urandom(16)) + b"".join(encode_record(r) for r in records)
        atomic_write(self.path, data, durable=self.durable)
        self._ino = None
        self.refresh()


def _replay(records: list[Record]) -> dict[str, bytes]:
    refs: dict[str, bytes] = {}
    for rec in records:
        if rec.kind == KIND_SNAPSHOT:
            refs = {n: v for n, _, v in rec.changes if v is not None}
            continue
        for name, _, new in rec.changes:
            if new is None:
                refs.pop(name, None)
            else:
                refs[name] = new
    return refs


def _read_from(fd: int, start: int, end: int) -> bytes:
    chunks = []
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(end - pos, 1 << 24), pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)
