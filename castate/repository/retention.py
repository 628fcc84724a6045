"""Retention (``forget``): which checkpoints, or whole sessions, a policy keeps; the rest lose their refs.

Rules follow restic's ``forget``: ``last`` keeps the newest N; ``within`` keeps everything
younger than a duration (measured from now); ``hourly``/``daily``/``weekly``/``monthly``
keep the newest item of each of the last N hours, days, ISO weeks or months that have any
(UTC). An item is kept if any rule keeps it. Named checkpoints (every name but those in
``Policy.unnamed``) are kept unless ``keep_named`` is off. A policy with no rule is
refused: it would remove everything. Forgetting removes refs only; ``gc`` frees the bytes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from castate.backends.base import RefUpdate
from castate.errors import ConflictError, InvalidKeyError
from castate.repository import refs as names
from castate.repository.moved import moved_ns
from castate.repository.repository import Repository

#: Checkpoint names that count as "unnamed": the one ``create_checkpoint`` uses when given
#: none, and the one automatic checkpoints use.
DEFAULT_UNNAMED = frozenset(("checkpoint", "auto"))

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``12h``, ``30d``, ``2w``, ``1y`` or ``1d12h``."""
    text = text.strip().lower()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidKeyError(f"{text!r} is not a duration: use a number and a unit, like 90s, 15m, 12h, 30d, 2w, 1y")
    return total


@dataclass(frozen=True, slots=True)
class Policy:
    """What to keep. Counts of 0 and a ``within`` of 0 mean the rule is off."""

    last: int = 0
    within: float = 0.0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    keep_named: bool = True
    unnamed: frozenset[str] = DEFAULT_UNNAMED

    def __post_init__(self) -> None:
        for rule in ("last", "hourly", "daily", "weekly", "monthly"):
            if getattr(self, rule) < 0:
                raise InvalidKeyError(f"keep-{rule} must not be negative")
        if self.within < 0:
            raise InvalidKeyError("keep-within must not be negative")

    @property
    def empty(self) -> bool:
        return not (self.last or self.within or self.hourly or self.daily or self.weekly or self.monthly)

    def check(self) -> None:
        if self.empty:
            raise InvalidKeyError(
                "refusing an empty retention policy (it would forget everything): "
                "give at least one of keep-last, keep-within, keep-hourly, keep-daily, keep-weekly, keep-monthly"
            )


@dataclass(frozen=True, slots=True)
class Item:
    """Something a policy decides on: a checkpoint, or a whole session."""

    kind: Literal["checkpoint", "session"]
    id: str
    session: str
    time: float  # epoch seconds
    named: bool
    refs: tuple[tuple[str, bytes], ...]  # what forgetting it removes (ref, current target)

    def __repr__(self) -> str:  # targets as hex, as castate shows commit ids everywhere else
        refs = ", ".join(f"({ref!r}, {cid.hex()!r})" for ref, cid in self.refs)
        return (
            f"Item(kind={self.kind!r}, id={self.id!r}, session={self.session!r}, time={self.time!r}, "
            f"named={self.named!r}, refs=({refs}{',' if len(self.refs) == 1 else ''}))"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    item: Item
    keep: bool
    reasons: tuple[str, ...]


_BUCKETS = {
    "hourly": "%Y-%m-%d %H",
    "daily": "%Y-%m-%d",
    "weekly": "%G-W%V",
    "monthly": "%Y-%m",
}


def plan(items: Sequence[Item], policy: Policy, now: float | None = None) -> list[Decision]:
    """Decide for one group of items (one session's checkpoints, or the sessions of a store)."""
    policy.check()
    now = time.time() if now is None else now
    ordered = sorted(items, key=lambda i: (i.time, i.id), reverse=True)
    reasons: dict[str, list[str]] = {i.id: [] for i in ordered}
    for n, item in enumerate(ordered):
        if n < policy.last:
            reasons[item.id].append(f"last {policy.last}")
        if policy.within and item.time >= now - policy.within:
            reasons[item.id].append("within")
        if policy.keep_named and item.named:
            reasons[item.id].append("named")
    for rule, fmt in _BUCKETS.items():
        limit = getattr(policy, rule)
        seen: set[str] = set()
        for item in ordered:
            if len(seen) >= limit:
                break
            bucket = datetime.fromtimestamp(item.time, UTC).strftime(fmt)
            if bucket not in seen:
                seen.add(bucket)
                reasons[item.id].append(f"{rule} {bucket}")
    return [Decision(i, bool(reasons[i.id]), tuple(reasons[i.id])) for i in ordered]


@dataclass(slots=True)
class ForgetReport:
    decisions: list[Decision] = field(default_factory=list)
    refs_removed: int = 0
    dry_run: bool = False
    skipped: list[str] = field(default_factory=list)  # items that changed meanwhile, left alone

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]


async def checkpoint_items(repo: Repository, sessions: Sequence[str] | None, policy: Policy) -> dict[str, list[Item]]:
    """Checkpoints grouped by session (all sessions when ``sessions`` is None)."""
    groups: dict[str, list[Item]] = {}
    if sessions is None:
        found = await repo.list_refs(names.CHECKPOINTS)
    else:
        found = {}
        for s in sessions:
            groups[s] = []
            found.update(await repo.list_refs(names.checkpoint_prefix(s)))
    for ref, cid in found.items():
        cpid = ref[len(names.CHECKPOINTS) :]
        try:
            session, label, stamp = names.parse_checkpoint_id(cpid)
        except InvalidKeyError:
            continue  # not made by castate: leave it alone
        item = Item(
            "checkpoint", cpid, session, names.checkpoint_time(stamp), label not in policy.unnamed, ((ref, cid),)
        )
        groups.setdefault(session, []).append(item)
    return groups


async def session_items(repo: Repository, sessions: Sequence[str] | None, policy: Policy) -> list[Item]:
    """Whole sessions (head and checkpoints), timed by when their head last moved (a save, a
    fork, a restore: ``castate.repository.moved``), so a session forked a minute ago is young."""
    heads = await repo.list_refs(names.SESSIONS)
    cps = await repo.list_refs(names.CHECKPOINTS)
    moved = await moved_ns(repo, heads)
    wanted = None if sessions is None else {names.session_ref(s) for s in sessions}
    out = []
    for ref, cid in heads.items():
        if wanted is not None and ref not in wanted:
            continue
        sid = names.session_of_ref(ref)
        prefix = names.checkpoint_prefix(sid)
        own = sorted((r, c) for r, c in cps.items() if r.startswith(prefix))
        named = any(names.parse_checkpoint_id(r[len(names.CHECKPOINTS) :])[1] not in policy.unnamed for r, _ in own)
        out.append(Item("session", sid, sid, moved[ref] / 1e9, named, ((ref, cid), *own)))
    return out


async def forget(
    repo: Repository,
    policy: Policy,
    *,
    sessions: Sequence[str] | None = None,
    whole_sessions: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> ForgetReport:
    """Apply ``policy`` to the checkpoints of ``sessions`` (all when None), or with
    ``whole_sessions`` to the sessions themselves (a forgotten session loses its head and
    checkpoints; one holding a named checkpoint counts as named)."""
    policy.check()
    report = ForgetReport(dry_run=dry_run)
    if whole_sessions:
        groups = {"": await session_items(repo, sessions, policy)}
    else:
        groups = await checkpoint_items(repo, sessions, policy)
    for _, items in sorted(groups.items()):
        decisions = plan(items, policy, now)
        report.decisions.extend(decisions)
        if dry_run:
            continue
        doomed = [d.item for d in decisions if not d.keep]
        batches = [doomed] if not whole_sessions else [[i] for i in doomed]
        for batch in batches:
            updates = [RefUpdate(ref, None, cid) for item in batch for ref, cid in item.refs]
            if not updates:
                continue
            try:
                await repo.update_refs(updates, message=f"forget {batch[0].kind}s"[:200])
            except ConflictError:
                report.skipped.extend(i.id for i in batch)  # moved since we looked: keep it
                continue
            report.refs_removed += len(updates)
    return report


__all__ = ["DEFAULT_UNNAMED", "Decision", "ForgetReport", "Item", "Policy", "forget", "parse_duration", "plan"]
