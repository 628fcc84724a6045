"""Revisions: how a user names a commit (a session head, a checkpoint, a commit id, ``~N``).

Accepted, tried in this order:

- ``session:ID``, ``checkpoint:ID``, ``commit:HEX``: explicit;
- a checkpoint id (``<session>/<name>/<stamp>``) that exists;
- a session id that exists (its head);
- a commit id: 64 hex digits, or a unique prefix of at least 6 among the commits that refs
  and the reflog name;
- any of these followed by ``~N``: the N-th save before it (first parents).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from castate.errors import InvalidKeyError, NotFoundError
from castate.repository import refs as names
from castate.repository.repository import Repository

MIN_PREFIX = 6
_ANCESTOR = re.compile(r"^(.+)~(\d+)$")


@dataclass(frozen=True, slots=True)
class Revision:
    """A resolved revision: its commit, the ref it was read from (if any), and its session."""

    commit: bytes
    label: str
    ref: str | None = None
    session: str | None = None


async def resolve(repo: Repository, text: str) -> Revision:
    """The commit ``text`` names; NotFoundError or InvalidKeyError when it names none."""
    if not isinstance(text, str) or not text:
        raise InvalidKeyError("a revision must be a non-empty str (a session, checkpoint or commit id)")
    found = await _resolve_exact(repo, text)
    if found is not None:
        return found
    m = _ANCESTOR.match(text)
    if m is not None:
        base = await _resolve_exact(repo, m.group(1))
        if base is not None:
            return await _ancestor(repo, base, int(m.group(2)), text)
    kind, sep, rest = text.partition(":")
    if sep and kind in ("session", "checkpoint", "commit"):
        raise NotFoundError(f"no {kind} {rest!r}")
    raise NotFoundError(f"no session, checkpoint or commit named {text!r} (see `castate sessions` and `castate log`)")


async def _resolve_exact(repo: Repository, text: str) -> Revision | None:
    kind, sep, rest = text.partition(":")
    if sep and kind in ("session", "checkpoint", "commit"):
        if kind == "session":
            return await _session(repo, rest)
        if kind == "checkpoint":
            return await _checkpoint(repo, rest)
        return await _commit(repo, rest)
    try:
        names.parse_checkpoint_id(text)
    except InvalidKeyError:
        pass
    else:
        found = await _checkpoint(repo, text)
        if found is not None:
            return found
    found = await _session(repo, text)
    if found is not None:
        return found
    return await _commit(repo, text)


async def _session(repo: Repository, session_id: str) -> Revision | None:
    try:
        ref = names.session_ref(session_id)
    except InvalidKeyError:
        return None
    cid = await repo.head(ref)
    return None if cid is None else Revision(cid, f"session {session_id}", ref, session_id)


async def _checkpoint(repo: Repository, checkpoint_id: str) -> Revision | None:
    try:
        session, _, _ = names.parse_checkpoint_id(checkpoint_id)
    except InvalidKeyError:
        return None
    ref = names.checkpoint_ref(checkpoint_id)
    cid = await repo.head(ref)
    return None if cid is None else Revision(cid, f"checkpoint {checkpoint_id}", ref, session)


async def _commit(repo: Repository, text: str) -> Revision | None:
    text = text.lower()
    if not (MIN_PREFIX <= len(text) <= 64) or any(c not in string.hexdigits for c in text):
        return None
    if len(text) == 64:
        cid = bytes.fromhex(text)
        if not await repo.backend.has_objects([cid]):
            return None
        commit = await repo.read_commit(cid)
        return Revision(cid, f"commit {text[:12]}", None, commit.session)
    known = set((await repo.list_refs()).values())
    for entry in await repo.reflog():
        known.update(c for c in (entry.old, entry.new) if c is not None)
    matches = sorted(c for c in known if c.hex().startswith(text))
    if len(matches) > 1:
        raise InvalidKeyError(f"commit prefix {text!r} is ambiguous ({len(matches)} commits); give more digits")
    if not matches:
        return None
    commit = await repo.read_commit(matches[0])
    return Revision(matches[0], f"commit {matches[0].hex()[:12]}", None, commit.session)


async def _ancestor(repo: Repository, base: Revision, n: int, text: str) -> Revision:
    cid = base.commit
    for i in range(n):
        commit = await repo.read_commit(cid)
        if not commit.parents:
            raise NotFoundError(f"{text!r}: {base.label} has only {i} earlier saves")
        cid = commit.parents[0]
        if not await repo.backend.has_objects([cid]):
            raise NotFoundError(f"{text!r}: saves before the {i + 1}th were removed by gc")
    return Revision(cid, f"{base.label}~{n}", None, base.session)


__all__ = ["Revision", "resolve"]
