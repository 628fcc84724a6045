"""Ref groups: how the S3 backend keeps refs in a few objects that move by conditional writes.

A *group* is the set of refs that one conditional PUT moves together. The refs of one session
(``sessions/<s>`` and every ``checkpoints/<s>/...``) form a group, so a save, its checkpoint
and their reflog entries move in one write; each ``kv/<k>`` is a group; every other ref
(``castate/epoch``, ``meta/...``, anything else) lives in the *root* group, which also holds the
gc lock. A group object is JSON::

    {"v": 1, "group": "s:<session>", "gen": 17, "w": "<write id>",
     "refs": {"<name>": "<hex target>"},
     "log": [["<name>", "<hex old>"|null, "<hex new>"|null, <time ns>, "<message>"], ...],
     "spill": "<key of the newest spilled reflog object>"|null, "expired": <ns>,
     "lock": {...}, "shared": {...}}          (root only: docs/format.md, S3 layout)

``gen`` grows by one with every write, so a body never repeats and an ETag (the MD5 of the
body) never comes back (no ABA). ``w`` is a random id of the write, read back when a reply was
lost. The reflog keeps at most ``LOG_INLINE`` entries inline; a write that would exceed it
first stores the inline entries as an immutable object (``reflog/<group hash>/<gen>-<w>``, its
JSON holding ``prev``: the spill before it) and keeps a pointer to it: the group object stays
small, the reflog whole. Entries older than ``expired`` are forgotten.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from castate.backends.base import ReflogEntry
from castate.errors import StoreError

ROOT = ""  # the root group's name
LOG_INLINE = 32


def group_of(ref: str) -> str:
    """The group a ref belongs to: ``s:<session>``, ``k:<key>`` or ROOT."""
    head, _, rest = ref.partition("/")
    if head == "sessions" and rest:
        return "s:" + rest
    if head == "checkpoints" and rest:
        return "s:" + rest.split("/", 1)[0]
    if head == "kv" and rest:
        return "k:" + rest
    return ROOT


def group_key(group: str) -> str:
    """The object key (under the store's prefix) of a group: ``refs/root``, ``refs/s/<hash>`` or
    ``refs/k/<hash>``. Names are hashed: a ref name may be 8 KB of any printable ASCII, a key
    1 KB of a narrower alphabet."""
    if group == ROOT:
        return "refs/root"
    return f"refs/{group[0]}/{hashlib.sha256(group.encode()).hexdigest()[:40]}"


def groups_for_prefix(prefix: str) -> tuple[list[str], str | None]:
    """Where the refs starting with ``prefix`` may live: (key prefixes to list, or a single group)."""
    head, slash, rest = prefix.partition("/")
    if head == "checkpoints" and "/" in rest:
        return [], "s:" + rest.split("/", 1)[0]
    if slash and head in ("sessions", "checkpoints"):
        return ["refs/s/"], None
    if slash and head == "kv":
        return ["refs/k/"], None
    return ["refs/s/", "refs/k/"], ROOT


@dataclass
class Group:
    """A group object's content, decoded; ``etag`` None: the object does not exist yet."""

    name: str
    etag: str | None = None
    gen: int = 0
    w: str = ""
    refs: dict[str, bytes] = field(default_factory=dict)
    log: list[list[Any]] = field(default_factory=list)
    spill: str | None = None
    expired: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # root: "lock", "shared"

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": 1,
            "group": self.name,
            "gen": self.gen,
            "w": self.w,
            "refs": {n: v.hex() for n, v in self.refs.items()},
            "log": self.log,
            "spill": self.spill,
            "expired": self.expired,
        }
        body.update(self.extra)
        return orjson.dumps(body)

    @classmethod
    def decode(cls, name: str, etag: str | None, data: bytes, key: str) -> Group:
        """Every field is checked for its shape here: a damaged object is a StoreError naming
        it, never a ValueError or TypeError later, wherever its parts are used."""
        try:
            body = orjson.loads(data)
            if type(body) is not dict or body.get("v") != 1 or body.get("group") != name:
                raise ValueError("not a castate ref group of this name")
            gen, w, refs, spill, expired = (
                body["gen"],
                body["w"],
                body["refs"],
                body.get("spill"),
                body.get("expired", 0),
            )
            if type(gen) is not int or type(w) is not str or type(expired) is not int:
                raise ValueError("gen, w or expired has the wrong type")
            if type(refs) is not dict or not all(type(n) is str and type(v) is str for n, v in refs.items()):
                raise ValueError("refs is not an object of hex strings")
            if spill is not None and type(spill) is not str:
                raise ValueError("spill is not a key")
            lock, shared = body.get("lock"), body.get("shared")
            if lock is not None and not (
                type(lock) is dict and type(lock.get("t")) is str and type(lock.get("n")) is int
            ):
                raise ValueError("lock is not {t: token, n: counter}")
            if shared is not None and not (type(shared) is dict and all(type(n) is int for n in shared.values())):
                raise ValueError("shared is not {token: counter}")
            extra = {k: body[k] for k in ("lock", "shared") if body.get(k) is not None}
            return cls(
                name,
                etag,
                gen,
                w,
                {n: bytes.fromhex(v) for n, v in refs.items()},
                check_rows(body["log"]),
                spill,
                expired,
                extra,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"ref group object {key} is damaged: {exc}") from None

    def successor(self) -> Group:
        """A copy to change and write next: ``gen`` one more, a new write id."""
        return Group(
            self.name,
            self.etag,
            self.gen + 1,
            os.urandom(8).hex(),
            dict(self.refs),
            list(self.log),
            self.spill,
            self.expired,
            {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.extra.items()},
        )


def log_row(name: str, old: bytes | None, new: bytes | None, time_ns: int, message: str) -> list[Any]:
    return [name, None if old is None else old.hex(), None if new is None else new.hex(), time_ns, message]


def entry(row: list[Any]) -> ReflogEntry:
    name, old, new, t, message = row
    return ReflogEntry(
        name, None if old is None else bytes.fromhex(old), None if new is None else bytes.fromhex(new), int(t), message
    )


def spill_key(group: Group) -> str:
    """The key of the reflog spill a write of ``group`` (already its successor) makes."""
    return f"reflog/{group_key(group.name).rsplit('/', 1)[-1]}/{group.gen:016d}-{group.w}"


def encode_spill(rows: list[list[Any]], prev: str | None) -> bytes:
    return orjson.dumps({"v": 1, "prev": prev, "log": rows})


def check_rows(log: Any) -> list[list[Any]]:
    """``log`` as reflog rows, each checked for its shape (ValueError otherwise)."""
    if type(log) is not list:
        raise ValueError("log is not a list")
    for row in log:
        if not (
            type(row) is list
            and len(row) == 5
            and type(row[0]) is str
            and all(part is None or (type(part) is str and _is_hex(part)) for part in row[1:3])
            and type(row[3]) is int
            and type(row[4]) is str
        ):
            raise ValueError(f"a reflog row is malformed: {str(row)[:80]}")
    return list(log)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def decode_spill(data: bytes, key: str) -> tuple[list[list[Any]], str | None]:
    try:
        body = orjson.loads(data)
        if type(body) is not dict:
            raise ValueError("not an object")
        prev = body.get("prev")
        if prev is not None and type(prev) is not str:
            raise ValueError("prev is not a key")
        return check_rows(body["log"]), prev
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"reflog object {key} is damaged: {exc}") from None


__all__ = ["LOG_INLINE", "ROOT", "Group", "entry", "group_key", "group_of", "groups_for_prefix", "log_row"]
