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
        try:
            body = orjson.loads(data)
            if body.get("v") != 1 or body.get("group") != name:
                raise ValueError("not a castate ref group of this name")
            extra = {k: body[k] for k in ("lock", "shared") if k in body}
            return cls(
                name,
                etag,
                int(body["gen"]),
                str(body["w"]),
                {n: bytes.fromhex(v) for n, v in body["refs"].items()},
                list(body["log"]),
                body.get("spill"),
                int(body.get("expired", 0)),
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


def decode_spill(data: bytes, key: str) -> tuple[list[list[Any]], str | None]:
    try:
        body = orjson.loads(data)
        return list(body["log"]), body.get("prev")
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"reflog object {key} is damaged: {exc}") from None


__all__ = ["LOG_INLINE", "ROOT", "Group", "entry", "group_key", "group_of", "groups_for_prefix", "log_row"]
