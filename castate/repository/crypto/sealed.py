"""The blob backend of an encrypted store: every blob, ref name and reflog message encrypted
on its way down, checked and decrypted on its way up.

``SealedBlobs`` wraps any ``BlobBackend``, so encryption is written once for every engine and
the engines never see a plaintext byte of the state (docs/format.md §7):

- a blob is ``"CSB1" || nonce || AES-256-GCM(data)`` under a key derived from the store's blob
  key and the blob's name, which is also the associated data: a blob moved to another name
  does not decrypt;
- ref names keep their first part (``sessions/``, ``checkpoints/``...); the rest is sealed
  with AES-SIV in at most two units (the second part, then everything after it), which is
  deterministic, so lookups, compare-and-swap and listings still work on every engine;
- reflog messages are AES-SIV too, but castate's own fixed ones. Ref values are object ids,
  keyed in an encrypted store (``castate.codec.objects.Ids``): they say nothing of the
  content and stay as they are.

What does not decrypt is damage: a blob reads as empty (which no pack or index segment is,
so the pack store reports it as it reports any damaged blob); a ref name is left out of
listings and reported by ``check_storage``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import re
import struct
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from castate.backends.base import MAX_REF_NAME, ReflogEntry, RefRepairReport, RefUpdate, _Any, check_ref_name
from castate.backends.blob import BlobBackend, BlobInfo, check_blob_name
from castate.errors import ConflictError, CorruptFileError, NotFoundError
from castate.repository.crypto.slots import KEYS_PREFIX, MARKER_REF, StoreKeys, skipped_slots

BLOB_MAGIC = b"CSB1"  # what every sealed blob starts with
NONCE = 12
TAG = 16
OVERHEAD = len(BLOB_MAGIC) + NONCE + TAG  # 32 bytes a sealed blob adds
_NAME_AD = [b"castate ref name"]
_MESSAGE_AD = [b"castate reflog message"]
MESSAGE_MARK = "~"
# Reflog messages castate writes that hold nothing of the user's: kept as they are (a sealed
# one takes 44 characters, and these are most of a LangGraph store's). Every other message
# (they name sessions, checkpoints, files) is sealed.
PLAIN_MESSAGES = frozenset(
    (
        "save",
        "langgraph put",
        "langgraph put_writes",
        "langgraph copy_thread",
        "gc: packs rewritten",
        "gc: an interrupted gc closed",
        "castate: store encrypted",
    )
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# A ref name part as AES-SIV's plaintext. The repository percent-encodes user strings
# (castate.repository.refs), which triples the length of non-ASCII text; a part that is the
# canonical percent-encoding of some bytes is encrypted as those bytes, so an encrypted name
# stays within the engines' limits (a 1 KiB session id: 1.4 KiB encrypted, not 4 KiB).
_RAW, _QUOTED, _UUID, _TILDE_UUID = b"\x00", b"\x01", b"\x02", b"\x03"
# A part that is a UUID in its canonical text (LangGraph's checkpoint and task ids) is sealed
# as its 16 bytes: 20 bytes fewer in every such name, in the journal and every listing.
_UUID_TEXT = re.compile(r"~?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_U16 = struct.Struct("<H")


def _pack_part(part: str) -> bytes:
    if _UUID_TEXT.fullmatch(part):
        return (_TILDE_UUID if part[0] == "~" else _UUID) + uuid.UUID(part.lstrip("~")).bytes
    data = urllib.parse.unquote_to_bytes(part)
    if data != part.encode("ascii") and urllib.parse.quote(data, safe="") == part:
        return _QUOTED + data
    return _RAW + part.encode("ascii")


def _unpack_part(data: bytes) -> str:
    kind, body = data[:1], data[1:]
    if kind == _QUOTED:
        return urllib.parse.quote(body, safe="")
    if kind == _RAW:
        return body.decode("ascii")
    if kind in (_UUID, _TILDE_UUID) and len(body) == 16:
        return ("~" if kind == _TILDE_UUID else "") + str(uuid.UUID(bytes=body))
    raise ValueError("not a sealed ref name part")


def _pack_unit(parts: list[str]) -> bytes:
    """Several parts of a name, encrypted as one unit: each packed part behind its u16 length."""
    return b"".join(_U16.pack(len(packed)) + packed for packed in map(_pack_part, parts))


def _unpack_unit(data: bytes) -> list[str]:
    parts: list[str] = []
    off = 0
    while off < len(data):
        if off + 2 > len(data):
            raise ValueError("truncated ref name unit")
        (n,) = _U16.unpack_from(data, off)
        off += 2
        if off + n > len(data):
            raise ValueError("truncated ref name unit")
        parts.append(_unpack_part(data[off : off + n]))
        off += n
    if not parts:
        raise ValueError("empty ref name unit")
    return parts


def _units(parts: list[str]) -> list[list[str]]:
    """How the parts after a name's first are encrypted: the second part (a session, a thread:
    what listings go by) on its own, and everything after it as one unit. Each unit costs a
    16-byte tag, so fewer units keep names short."""
    return [parts[:1], parts[1:]] if len(parts) > 1 else [parts]


class SealedBlobs(BlobBackend):
    """Encrypts what goes into ``inner`` with ``keys`` and checks what comes out."""

    def __init__(self, inner: BlobBackend, keys: StoreKeys) -> None:
        self.inner = inner
        self.keys = keys
        self.location = inner.location
        self._blob_key = keys.blob_key
        self._siv = AESSIV(keys.name_key)
        self._names: dict[str, str] = {}  # plaintext ref name -> sealed, for the names in use
        self._plain: dict[str, str] = {}  # and back
        self.foreign: set[str] = set()  # listed ref names that do not decrypt (see _listed)

    def __getattr__(self, name: str) -> Any:
        # Backend-specific attributes (``create``, ``durability``, a local store's root) are the
        # inner backend's; everything the contract names is defined below.
        return getattr(self.inner, name)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    # -- blobs ------------------------------------------------------------------------------

    def _aead(self, name: str) -> AESGCM:
        return AESGCM(blake3.blake3(name.encode("ascii"), key=self._blob_key).digest())

    def seal_blob(self, name: str, data: bytes | memoryview) -> bytes:
        nonce = os.urandom(NONCE)
        return BLOB_MAGIC + nonce + self._aead(name).encrypt(nonce, bytes(data), name.encode("ascii"))

    def open_blob(self, name: str, sealed: bytes | memoryview) -> bytes:
        view = memoryview(sealed)
        if len(view) < OVERHEAD or view[:4] != BLOB_MAGIC:
            raise CorruptFileError(name, "not an encrypted castate blob (bad magic or too short)")
        try:
            return self._aead(name).decrypt(view[4 : 4 + NONCE], view[4 + NONCE :], name.encode("ascii"))
        except InvalidTag:
            raise CorruptFileError(name, "does not decrypt under this store's key: damaged or replaced") from None

    @staticmethod
    def _check_name(name: str) -> None:
        check_blob_name(name)  # before the name is the AEAD's associated data (it must be ASCII)
        if name.startswith(KEYS_PREFIX):
            raise ValueError(f"blob {name} is a key slot: the key functions write those")

    async def get_blobs(self, names: Collection[str]) -> dict[str, bytes]:
        """The decrypted blobs; one that does not decrypt comes back empty, so the pack store
        finds it damaged as it finds damage in any store (``CorruptObjectError`` naming the
        first object it makes unreadable) while the other blobs of the call still read."""
        got = await self.inner.get_blobs(names)
        out: dict[str, bytes] = {}
        for name, data in got.items():
            try:
                out[name] = self.open_blob(name, data)
            except CorruptFileError:
                out[name] = b""
        return out

    async def get_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        # An AEAD checks a whole message: read each blob whole once (only the heads of packs
        # no index segment covers are read by range, which is rare).
        whole = await self.get_blobs({name for name, _, _ in ranges})
        out: list[bytes | None] = []
        for name, off, n in ranges:
            data = whole.get(name)
            out.append(None if data is None else data[off : off + n])
        return out

    async def list_blobs(self, prefix: str = "") -> list[BlobInfo]:
        infos = await self.inner.list_blobs(prefix)
        return [
            BlobInfo(i.name, max(i.size - OVERHEAD, 0), i.time_ns) for i in infos if not i.name.startswith(KEYS_PREFIX)
        ]

    async def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        for name, _ in items:
            self._check_name(name)
        return await self.inner.put_blobs([(name, self.seal_blob(name, data)) for name, data in items])

    async def delete_blobs(self, names: Collection[str]) -> int:
        for name in names:
            self._check_name(name)
        return await self.inner.delete_blobs(names)

    # -- ref names, values and messages --------------------------------------------------------

    def seal_name(self, name: str) -> str:
        """The name the inner backend keeps: the first part as it is (``sessions``,
        ``checkpoints``...), the rest sealed in at most two units (``_units``); a name of one
        part is sealed whole. ValueError for a name the contract refuses, or one too long once
        encrypted."""
        sealed = self._names.get(name)
        if sealed is None:
            check_ref_name(name)
            ns, sep, rest = name.partition("/")
            if sep:
                sealed = ns + "/" + "/".join(self._seal_unit(unit) for unit in _units(rest.split("/")))
            else:
                sealed = self._seal_unit([name])
            if len(sealed) > MAX_REF_NAME:
                raise ValueError(
                    f"bad ref name {name[:80]!r}: {len(name)} characters, {len(sealed)} once encrypted; "
                    f"an encrypted store holds names of at most {MAX_REF_NAME} characters encrypted"
                )
            self._remember(name, sealed)
        return sealed

    def _seal_unit(self, parts: list[str]) -> str:
        return _b64(self._siv.encrypt(_pack_unit(parts), _NAME_AD))

    def _open_unit(self, sealed: str) -> list[str]:
        return _unpack_unit(self._siv.decrypt(_unb64(sealed), _NAME_AD))

    def open_name(self, sealed: str) -> str:
        name = self._plain.get(sealed)
        if name is None:
            ns, sep, rest = sealed.partition("/")
            try:
                units = [self._open_unit(u) for u in rest.split("/")] if sep else [self._open_unit(sealed)]
                if sep and (len(units) > 2 or (len(units) == 2 and len(units[0]) != 1)):
                    raise ValueError("not the units castate makes")
                joined = "/".join(part for unit in units for part in unit)
                name = ns + "/" + joined if sep else joined
            except (ValueError, InvalidTag, binascii.Error, UnicodeDecodeError):
                why = "its name does not decrypt under this store's key"
                raise CorruptFileError(f"ref {sealed[:120]}", why) from None
            self._remember(name, sealed)
        return name

    def _remember(self, name: str, sealed: str) -> None:
        if len(self._names) >= 1 << 16:  # a cache, not a record: bounded
            self._names.clear()
            self._plain.clear()
        self._names[name] = sealed
        self._plain[sealed] = name

    def seal_message(self, message: str) -> str:
        if message in PLAIN_MESSAGES:
            return message
        if not message:
            return ""
        return MESSAGE_MARK + _b64(self._siv.encrypt(message.encode("utf-8"), _MESSAGE_AD))

    def open_message(self, sealed: str) -> str:
        if not sealed.startswith(MESSAGE_MARK):
            # Empty, or written by the inner backend itself (the local store's journal repair
            # records "repair: change(s) of a lost record"): castate's own words, not state.
            return sealed
        try:
            return self._siv.decrypt(_unb64(sealed[1:]), _MESSAGE_AD).decode("utf-8")
        except (ValueError, InvalidTag, binascii.Error, UnicodeDecodeError):
            return f"(a message that does not decrypt: {sealed[:40]!r})"

    def _conflict(self, exc: ConflictError) -> ConflictError:
        """The inner backend's conflict, told with the plaintext ref name."""
        ref = exc.ref
        if ref is None:
            return exc
        try:
            plain = self.open_name(ref)
        except CorruptFileError:
            return exc
        out = type(exc)(
            str(exc).replace(ref, plain),
            plain,
            session_id=exc.session_id,
            expected=exc.expected,
            current=exc.current,
        )
        out.__cause__ = exc.__cause__
        return out

    # -- refs -------------------------------------------------------------------------------

    async def get_refs(self, names: Collection[str]) -> dict[str, bytes]:
        sealed = {self.seal_name(n): n for n in names}
        got = await self.inner.get_refs(list(sealed))
        return {sealed[s]: v for s, v in got.items()}

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        ns, sep, rest = prefix.partition("/")
        if not sep:
            inner_prefix, wanted = "", prefix
        else:
            # Listed under the deepest whole unit the prefix names (the namespace, or the
            # namespace and the second part), filtered past it.
            *whole, last = rest.split("/")
            inner_prefix = ns + "/" + (self._seal_unit(whole[:1]) + "/" if whole else "")
            wanted = "" if len(whole) <= 1 and not last else prefix
        got = await self.inner.list_refs(inner_prefix)
        out: dict[str, bytes] = {}
        for s, v in got.items():
            name = self._listed(s)
            if name is not None and name.startswith(wanted):
                out[name] = v
        return out

    def _listed(self, sealed: str) -> str | None:
        """A listed ref's name, or None for the marker and for a name that does not decrypt
        (written by something else than this store's castate: it is kept aside for
        ``check_storage`` to report, so one such ref never hides every session)."""
        if sealed == MARKER_REF:
            return None
        try:
            return self.open_name(sealed)
        except CorruptFileError:
            if len(self.foreign) < 1000:
                self.foreign.add(sealed)
            return None

    async def commit(
        self,
        blobs: Sequence[tuple[str, bytes]],
        updates: Sequence[RefUpdate],
        *,
        message: str = "",
        checks: Mapping[str, bytes | None] | None = None,
    ) -> int:
        for name, _ in blobs:
            self._check_name(name)
        sealed_blobs = [(name, self.seal_blob(name, data)) for name, data in blobs]
        sealed_updates = [RefUpdate(self.seal_name(u.name), u.new, u.expected) for u in updates]
        sealed_checks = None if checks is None else {self.seal_name(n): v for n, v in checks.items()}
        try:
            return await self.inner.commit(
                sealed_blobs, sealed_updates, message=self.seal_message(message), checks=sealed_checks
            )
        except ConflictError as exc:
            raise self._conflict(exc) from exc.__cause__

    async def reflog(self, name: str | None = None) -> list[ReflogEntry]:
        entries = await self.inner.reflog(None if name is None else self.seal_name(name))
        out: list[ReflogEntry] = []
        for e in entries:
            plain = self._listed(e.name)
            if plain is not None:
                out.append(ReflogEntry(plain, e.old, e.new, e.time_ns, self.open_message(e.message)))
        return out

    async def expire_reflog(self, before_ns: int) -> int:
        return await self.inner.expire_reflog(before_ns)

    async def copy_ref(
        self, source: str, target: str, *, expected: bytes | _Any | None = None, message: str = ""
    ) -> bytes:
        try:
            return await self.inner.copy_ref(
                self.seal_name(source), self.seal_name(target), expected=expected, message=self.seal_message(message)
            )
        except NotFoundError:
            raise NotFoundError(f"no ref {source}") from None
        except ConflictError as exc:
            raise self._conflict(exc) from exc.__cause__

    # -- maintenance ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def gc_exclusive(self) -> AsyncIterator[None]:
        async with self.inner.gc_exclusive():
            yield

    @contextlib.asynccontextmanager
    async def gc_shared(self) -> AsyncIterator[None]:
        async with self.inner.gc_shared():
            yield

    async def now_ns(self) -> int:
        return await self.inner.now_ns()

    async def reclaim(self) -> None:
        await self.inner.reclaim()

    async def check_storage(self) -> list[str]:
        problems = await self.inner.check_storage()
        problems += [
            f"key slot {name}: skipped ({why})" for name, why in sorted((await skipped_slots(self.inner)).items())
        ]
        await self.list_refs()  # brings every ref name past _listed
        for sealed in sorted(self.foreign):
            if sealed in await self.inner.get_refs([sealed]):
                problems.append(
                    f"ref {sealed[:120]}: its name does not decrypt under this store's key (not written by "
                    "castate with this key); it is left out of every listing"
                )
        return problems

    async def repair_refs(self) -> RefRepairReport:
        """The inner backend's repair, its ref names told in plaintext (a name guessed from
        damaged bytes that does not decrypt stays as it was found)."""
        report = await self.inner.repair_refs()
        return dataclasses.replace(
            report,
            inferred={self._readable(n): v for n, v in report.inferred.items()},
            maybe_lost=[self._readable(n) for n in report.maybe_lost],
        )

    def _readable(self, sealed: str) -> str:
        try:
            return self.open_name(sealed)
        except CorruptFileError:
            return sealed

    async def stats(self) -> dict[str, int]:
        """The inner backend's figures, its blobs counted as ``list_blobs`` lists them: key
        slots left out, and sizes without the bytes sealing adds."""
        out = dict(await self.inner.stats())
        if "blobs" in out and "blob_bytes" in out:
            slots = await self.inner.list_blobs(KEYS_PREFIX)
            out["blobs"] = max(out["blobs"] - len(slots), 0)
            sealed = out["blob_bytes"] - sum(i.size for i in slots)
            out["blob_bytes"] = max(sealed - OVERHEAD * out["blobs"], 0)
        return out


__all__ = ["OVERHEAD", "SealedBlobs"]
