"""References: the one grammar by which a user names a state (the CLI, and the sessions API
through ``castate.repository.revisions``), its resolver, and the short forms listings print.

Accepted, tried in this order (the first form that names something wins):

``session:ID``, ``checkpoint:ID``, ``commit:HEX``
    explicit, for an id that looks like another form;
``run-1/before_deploy/20261127T110102.123456Z-3fa9c1``
    a checkpoint, by its full id;
``run-1``
    a session: its head (latest save);
``run-1@{2026-12-05T10:30:00Z}``, ``run-1@{2026-12-05 11:30}``
    the state of session ``run-1`` at that time: where its head was then (after a save, a
    restore, a fork at or before it), from the session's reflog, and past the reflog's
    expiry from its history of saves. An ISO 8601 time; without a zone it is local time,
    as the CLI's tables print times. A time before the session's first save, or while it
    was deleted, raises NotFoundError saying when it existed;
``run-1@before_deploy``
    the newest checkpoint named ``before_deploy`` of session ``run-1`` (session id and
    name as ``castate sessions`` and ``castate checkpoints`` print them);
``run-1/before_deploy``, ``run-1/before_deploy/20261127T1101``
    a checkpoint id shortened git-style: whole session and name parts, then any start of
    the stamp; it must name one checkpoint (when several share the name, add stamp
    digits, or use ``@`` for the newest);
``3fa9c1d``
    a commit: 64 hex digits, or a unique prefix of at least 6 (among the commits refs and
    the reflog name, then the histories they reach);
``REF~N`` (``REF~`` is ``REF~1``)
    the N-th save before any of the above (first parents).

An ambiguous reference raises InvalidKeyError listing what it could mean; a reference that
names nothing raises NotFoundError saying what would. ``short_checkpoint_ids`` and
``abbrev_length`` give the shortest forms that resolve back to the same thing, for listings.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from castate.backends.base import ReflogEntry
from castate.errors import InvalidKeyError, NotFoundError
from castate.repository import refs as names
from castate.repository.repository import Repository

MIN_PREFIX = 6  # the shortest commit prefix resolved
MIN_ABBREV = 7  # the shortest commit prefix printed (git's default)
STAMP_ABBREV = 15  # a shortened checkpoint stamp keeps at least its date and time to the second
_ANCESTOR = re.compile(r"(.+)~([0-9]{0,9})", re.DOTALL)  # fullmatch: no trailing newline; ASCII digits
_AT_TIME = re.compile(r"(.+)@\{([^{}]*)\}", re.DOTALL)  # fullmatch; the last ``@{`` splits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = ("session", "checkpoint", "commit")
_MAX_LISTED = 5


@dataclass(frozen=True, slots=True)
class Revision:
    """A resolved reference: its commit, a label for messages, the ref it was read from (if
    any), and its session."""

    commit: bytes
    label: str
    ref: str | None = None
    session: str | None = None


async def resolve(repo: Repository, text: str) -> Revision:
    """The commit ``text`` names (see the module for the grammar)."""
    if not isinstance(text, str) or not text:
        raise InvalidKeyError("a reference must be a non-empty str (a session, checkpoint or commit)")
    found = await _exact(repo, text)
    if found is not None:
        return found
    m = _ANCESTOR.fullmatch(text)
    if m is not None:
        base = await _exact(repo, m.group(1))
        if base is not None:
            return await _ancestor(repo, base, int(m.group(2) or 1), text)
    raise NotFoundError(await _explain(repo, text))


async def _exact(repo: Repository, text: str) -> Revision | None:
    kind, sep, rest = text.partition(":")
    if sep and kind in _KINDS:
        if kind == "session":
            return await _session(repo, rest)
        if kind == "checkpoint":
            return await _checkpoint(repo, rest)
        return await _commit(repo, rest)
    if _is_checkpoint_id(text):
        found = await _checkpoint(repo, text)
        if found is not None:
            return found
    found = await _session(repo, text)
    if found is None and "@{" in text:
        found = await _at_time(repo, text)
    if found is None and "@" in text:
        found = await _named(repo, text)
    if found is None and "/" in text:
        found = await _short_checkpoint(repo, text)
    if found is None:
        found = await _commit(repo, text)
    return found


def _is_checkpoint_id(text: str) -> bool:
    try:
        names.parse_checkpoint_id(text)
    except InvalidKeyError:
        return False
    return True


async def _session(repo: Repository, session_id: str) -> Revision | None:
    try:
        ref = names.session_ref(session_id)
    except InvalidKeyError:
        return None
    cid = await repo.head(ref)
    return None if cid is None else Revision(cid, f"session {session_id}", ref, session_id)


async def _checkpoint(repo: Repository, checkpoint_id: str) -> Revision | None:
    if not _is_checkpoint_id(checkpoint_id):
        return None
    session = names.parse_checkpoint_id(checkpoint_id)[0]
    ref = names.checkpoint_ref(checkpoint_id)
    cid = await repo.head(ref)
    return None if cid is None else Revision(cid, f"checkpoint {checkpoint_id}", ref, session)


async def _checkpoints_of(repo: Repository, session_id: str) -> dict[str, bytes]:
    """Checkpoint id -> commit, for one session's castate-made checkpoints."""
    try:
        prefix = names.checkpoint_prefix(session_id)
    except InvalidKeyError:
        return {}
    found = await repo.list_refs(prefix)
    return {
        ref[len(names.CHECKPOINTS) :]: cid
        for ref, cid in found.items()
        if _is_checkpoint_id(ref[len(names.CHECKPOINTS) :])
    }


def parse_time(text: str) -> int | None:
    """An ISO 8601 time as epoch nanoseconds (local time when it has no zone), or None."""
    try:
        when = datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.astimezone()  # a naive time is the machine's local time
        delta = when - _EPOCH
    except (ValueError, OverflowError, OSError):  # not ISO 8601, or out of the platform's range
        return None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _at_time(repo: Repository, text: str) -> Revision | None:
    """``SESSION@{TIME}``: where the session's head was at that time. None when the text is
    not of that form (the braces hold no time, or no valid session id precedes them)."""
    m = _AT_TIME.fullmatch(text)
    if m is None:
        return None
    session, when = m.group(1), parse_time(m.group(2))
    if when is None:
        return None
    try:
        ref = names.session_ref(session)
    except InvalidKeyError:
        return None
    label = f"session {session} at {_when(when)}"
    log = await repo.reflog(ref)
    before = [e for e in log if e.time_ns <= when]
    if before:
        entry = before[-1]
        if entry.new is None:
            later = next((e for e in log if e.time_ns > when and e.new is not None), None)
            again = f"; it was created again at {_when(later.time_ns)}" if later else ""
            raise NotFoundError(f"{text!r}: session {session!r} was deleted at {_when(entry.time_ns)}{again}")
        if not await repo.backend.has_objects([entry.new]):
            raise NotFoundError(f"{text!r}: the state session {session!r} had then is no longer stored (gc removed it)")
        return Revision(entry.new, label, None, session)
    if log and log[0].old is None:  # the reflog starts with the session's creation, after ``when``
        raise NotFoundError(
            f"{text!r}: session {session!r} did not exist yet; its first state is from {_when(log[0].time_ns)}"
        )
    # The reflog does not reach back to ``when`` (its older entries expired, or it has none):
    # the newest save at or before ``when`` in the history the reflog's oldest entry starts from.
    start = log[0].old if log else await repo.head(ref)
    if start is None:
        raise NotFoundError(f"{text!r}: there is no session {session!r} (see `castate sessions`)")
    cid: bytes | None = start
    oldest: int | None = None
    while cid is not None:
        if not await repo.backend.has_objects([cid]):
            raise NotFoundError(
                f"{text!r}: session {session!r}'s saves from before {_when(oldest or when)} are no longer stored "
                "(gc removed them)"
            )
        commit = await repo.read_commit(cid)
        if commit.time_ns <= when:
            return Revision(cid, label, None, session)
        oldest = commit.time_ns
        cid = commit.parents[0] if commit.parents else None
    assert oldest is not None
    raise NotFoundError(f"{text!r}: session {session!r} did not exist yet; its first save is from {_when(oldest)}")


async def _named(repo: Repository, text: str) -> Revision | None:
    """``SESSION@NAME``: the newest checkpoint of that name (each ``@`` is tried as the split)."""
    hits: list[tuple[str, str, bytes]] = []
    for i, ch in enumerate(text):
        if ch != "@" or i == 0 or i == len(text) - 1:
            continue
        session, name = text[:i], text[i + 1 :]
        same = [
            (cpid, cid)
            for cpid, cid in (await _checkpoints_of(repo, session)).items()
            if names.parse_checkpoint_id(cpid)[1] == name
        ]
        if same:
            cpid, cid = max(same, key=lambda x: names.parse_checkpoint_id(x[0])[2])
            hits.append((session, cpid, cid))
    if len(hits) > 1:
        raise InvalidKeyError(
            f"{text!r} is ambiguous: it names checkpoints of sessions "
            + ", ".join(repr(s) for s, _, _ in hits)
            + "; use a checkpoint id"
        )
    if not hits:
        return None
    session, cpid, cid = hits[0]
    return Revision(cid, f"checkpoint {cpid}", names.CHECKPOINTS + cpid, session)


async def _short_checkpoint(repo: Repository, text: str) -> Revision | None:
    """``SESSION/NAME`` or ``SESSION/NAME/STAMP-PREFIX`` (parts spelled as in checkpoint ids)."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        return None
    try:
        session = names.parse_checkpoint_id(f"{parts[0]}/{parts[1]}/x")[0]
    except InvalidKeyError:
        return None
    stamp = parts[2] if len(parts) == 3 else ""
    matches = sorted(
        (cpid, cid)
        for cpid, cid in (await _checkpoints_of(repo, session)).items()
        if cpid.startswith(f"{parts[0]}/{parts[1]}/{stamp}")
    )
    if len(matches) > 1:
        listed = ", ".join(short for short in short_checkpoint_ids([c for c, _ in matches]).values())
        more = f" and {len(matches) - _MAX_LISTED} more" if len(matches) > _MAX_LISTED else ""
        name = names.parse_checkpoint_id(matches[0][0])[1]
        raise InvalidKeyError(
            f"{text!r} names {len(matches)} checkpoints ({_first(listed)}{more}): add digits of the time, "
            f"or write {session}@{name} for the newest"
        )
    if not matches:
        return None
    cpid, cid = matches[0]
    return Revision(cid, f"checkpoint {cpid}", names.CHECKPOINTS + cpid, session)


def _first(listed: str) -> str:
    return ", ".join(listed.split(", ")[:_MAX_LISTED])


async def known_commits(repo: Repository, reflog: Sequence[ReflogEntry] | None = None) -> set[bytes]:
    """The commits refs and the reflog name: where commit prefixes are looked up first
    (``reflog`` when the caller read it already)."""
    known = set((await repo.list_refs()).values())
    for entry in await repo.reflog() if reflog is None else reflog:
        known.update(c for c in (entry.old, entry.new) if c is not None)
    return known


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
    known = await known_commits(repo)
    matches = sorted(c for c in known if c.hex().startswith(text))
    if not matches:  # an older save no ref or reflog entry names any more: walk the histories
        matches = sorted(c for c in await _reachable_commits(repo, known) if c.hex().startswith(text))
    if len(matches) > 1:
        listed = ", ".join(c.hex()[: len(text) + 4] for c in matches[:_MAX_LISTED])
        raise InvalidKeyError(
            f"commit prefix {text!r} is ambiguous ({len(matches)} commits: {listed}); give more digits"
        )
    if not matches:
        return None
    commit = await repo.read_commit(matches[0])
    return Revision(matches[0], f"commit {matches[0].hex()[:12]}", None, commit.session)


async def _reachable_commits(repo: Repository, start: Iterable[bytes]) -> set[bytes]:
    """Every stored commit reachable through parents from ``start`` (those gc removed are skipped)."""
    seen: set[bytes] = set()
    frontier = set(start)
    while frontier:
        present = await repo.backend.has_objects(frontier)
        seen.update(present)
        commits = await repo.read_commits(sorted(present))
        frontier = {p for c in commits.values() for p in c.parents if p not in seen}
    return seen


async def _ancestor(repo: Repository, base: Revision, n: int, text: str) -> Revision:
    cid = base.commit
    for i in range(n):
        commit = await repo.read_commit(cid)
        if not commit.parents:
            raise NotFoundError(f"{text!r}: {base.label} has {_saves(i)} before it")
        cid = commit.parents[0]
        if not await repo.backend.has_objects([cid]):
            raise NotFoundError(
                f"{text!r}: only {_saves(i)} before {base.label} are still stored; gc removed older ones"
            )
    return Revision(cid, f"{base.label}~{n}", None, base.session)


def _saves(n: int) -> str:
    return "no earlier save" if n == 0 else f"only {n} earlier save" + ("" if n == 1 else "s")


async def _explain(repo: Repository, text: str) -> str:
    """What to say when ``text`` names nothing: the nearest form, and what would work."""
    kind, sep, rest = text.partition(":")
    if sep and kind in _KINDS:
        return f"no {kind} {rest!r}"
    at = _AT_TIME.fullmatch(text)
    if at is not None and parse_time(at.group(2)) is None:
        return (
            f"{text!r}: {at.group(2)!r} is not a time; write SESSION@{{TIME}} with an ISO 8601 time, "
            "e.g. run-1@{2026-12-05T10:30:00Z}, or run-1@{2026-12-05 11:30} for local time"
        )
    for splitter in ("@", "/"):
        if splitter not in text:
            continue
        session, _, name = text.partition(splitter)
        if splitter == "/":
            try:
                session = names.parse_checkpoint_id(f"{session}/x/x")[0]
            except InvalidKeyError:
                continue
            name = name.split("/")[0]
        if session and await repo.head(names.session_ref(session)) is not None:
            return f"session {session!r} has no checkpoint {name!r} (list them with `castate checkpoints {session}`)"
    return (
        f"no session, checkpoint or commit named {text!r} "
        "(see `castate sessions`, `castate checkpoints SESSION` and `castate log SESSION`)"
    )


# -- short forms for listings -----------------------------------------------------------------


def abbrev_length(shown: Iterable[bytes], known: Iterable[bytes] = (), minimum: int = MIN_ABBREV) -> int:
    """The shortest hex prefix length (at least ``minimum``) that tells every id in ``shown``
    apart from every other id in ``shown`` and ``known``: git's abbreviation."""
    ids = sorted({c.hex() for c in shown} | {c.hex() for c in known})
    wanted = {c.hex() for c in shown}
    length = minimum
    for a, b in itertools.pairwise(ids):
        if a in wanted or b in wanted:
            common = len(_common_prefix(a, b))
            length = max(length, common + 1)
    return min(length, 64)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def short_checkpoint_ids(checkpoint_ids: Sequence[str], others: Iterable[str] = ()) -> dict[str, str]:
    """Each checkpoint id's shortest form that ``resolve`` takes back to it: ``SESSION/NAME``
    when no other checkpoint (in ``checkpoint_ids`` and ``others``) has that session and name,
    else ``SESSION/NAME/`` and enough of the stamp to tell it apart (at least to the second)."""
    groups: dict[str, list[str]] = {}
    for cpid in {*checkpoint_ids, *others}:
        session_part, name_part, stamp = cpid.split("/")
        groups.setdefault(f"{session_part}/{name_part}", []).append(stamp)
    out = {}
    for cpid in checkpoint_ids:
        session_part, name_part, stamp = cpid.split("/")
        key = f"{session_part}/{name_part}"
        siblings = sorted(groups[key])
        if len(siblings) == 1:
            out[cpid] = key
            continue
        i = siblings.index(stamp)
        near = [s for s in (siblings[i - 1] if i else None, siblings[i + 1] if i + 1 < len(siblings) else None) if s]
        need = max(len(_common_prefix(stamp, s)) + 1 for s in near)
        out[cpid] = f"{key}/{stamp[: max(need, STAMP_ABBREV)]}"
    return out


__all__ = ["Revision", "abbrev_length", "known_commits", "parse_time", "resolve", "short_checkpoint_ids"]
