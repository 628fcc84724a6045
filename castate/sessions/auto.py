"""Automatic checkpoints: every N saves, every T seconds, and when chosen fields change.

``AutoCheckpoint`` is the policy given to a ``StateManager``; after each save the manager's
``AutoCheckpointer`` decides whether that save becomes a checkpoint. An automatic checkpoint
is a new ref to the commit the save made (O(1) while that commit is still the session's
head; a walk of its tree when another writer moved the head meanwhile), named ``policy.name``. With ``keep_last``
only the newest K automatic checkpoints of a session stay; other checkpoints are never
touched. Counters live in the manager: a new process starts counting afresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from castate.errors import ConflictError, InvalidKeyError
from castate.repository import Repository
from castate.repository import refs as names

FieldPath = tuple[str, ...]
PRUNE_ATTEMPTS = 5
_MISSING = b"\x00missing"


def _field_paths(on_change: str | Sequence[str | Sequence[str]]) -> tuple[FieldPath, ...]:
    items = [on_change] if isinstance(on_change, str) else list(on_change)
    out = []
    for item in items:
        path = tuple(item.split(".")) if isinstance(item, str) else tuple(item)
        if not path or not all(isinstance(k, str) and k for k in path):
            raise ValueError(f"on_change field {item!r} is not a key or a path of keys")
        out.append(path)
    return tuple(out)


@dataclass(frozen=True)
class AutoCheckpoint:
    """When to checkpoint a session automatically, and how many automatic checkpoints to keep.

    - ``every_saves``: checkpoint when this many saves passed since the last automatic one.
    - ``every_seconds``: checkpoint at the first save this long after the last automatic
      checkpoint (or after the manager first saved the session), as measured by ``clock``.
    - ``on_change``: checkpoint the save in which one of these fields changed, compared with
      the session's previous save or load by this manager. A field is a top-level key
      (``"status"``), a dotted path (``"metadata.status"``) or a tuple of keys.
    - ``keep_last``: keep only the newest K automatic checkpoints of each session.
    - ``name``: the checkpoint name that marks a checkpoint as automatic.

    Any automatic checkpoint restarts both the save count and the timer.
    """

    every_saves: int | None = None
    every_seconds: float | None = None
    on_change: str | Sequence[str | Sequence[str]] = ()
    keep_last: int | None = None
    name: str = "auto"
    clock: Callable[[], float] = time.monotonic
    fields: tuple[FieldPath, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.every_saves is not None and (type(self.every_saves) is not int or self.every_saves < 1):
            raise ValueError("every_saves must be a positive int")
        if self.every_seconds is not None and not (
            isinstance(self.every_seconds, int | float) and math.isfinite(self.every_seconds) and self.every_seconds > 0
        ):
            raise ValueError("every_seconds must be a positive number")
        if self.keep_last is not None and (type(self.keep_last) is not int or self.keep_last < 1):
            raise ValueError("keep_last must be a positive int")
        names.check_name(self.name, "checkpoint name")
        object.__setattr__(self, "fields", _field_paths(self.on_change))
        if self.every_saves is None and self.every_seconds is None and not self.fields:
            raise ValueError("an AutoCheckpoint needs every_saves, every_seconds or on_change")


@dataclass
class _Track:
    saves: int
    since: float
    values: tuple[bytes, ...] | None = None


def _lookup(state: Any, path: FieldPath) -> bytes:
    value = state
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    try:  # equality on canonical bytes, so 1, 1.0 and True stay different values
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value).encode()


class AutoCheckpointer:
    """Applies an ``AutoCheckpoint`` policy to the saves of one StateManager."""

    def __init__(self, policy: AutoCheckpoint) -> None:
        self.policy = policy
        self._tracks: dict[str, _Track] = {}

    def observe(self, session_id: str, state: Any) -> None:
        """Remember the watched fields of a state just loaded, to compare the next save with."""
        if self.policy.fields and state is not None:
            self._track(session_id).values = self._values(state)

    def forget(self, session_id: str) -> None:
        """Drop what is known of the session's watched fields (its head moved elsewhere)."""
        track = self._tracks.get(session_id)
        if track is not None:
            track.values = None

    def due(self, session_id: str, state: Any) -> list[str]:
        """Count one save of ``state``; the reasons to checkpoint it (empty: no checkpoint)."""
        policy = self.policy
        track = self._track(session_id)
        now = policy.clock()
        track.saves += 1
        reasons = []
        if policy.every_saves is not None and track.saves >= policy.every_saves:
            reasons.append(f"{track.saves} saves")
        if policy.every_seconds is not None and now - track.since >= policy.every_seconds:
            reasons.append(f"{now - track.since:g} s")
        if policy.fields:
            values = self._values(state)
            if track.values is not None:
                changed = [".".join(p) for p, a, b in zip(policy.fields, track.values, values, strict=True) if a != b]
                if changed:
                    reasons.append("changed " + ", ".join(changed))
            track.values = values
        if reasons:
            track.saves = 0
            track.since = now
        return reasons

    async def checkpoint(self, repo: Repository, session_id: str, commit: bytes, reasons: list[str]) -> str:
        """Make ``commit`` an automatic checkpoint of the session, then apply ``keep_last``."""
        cpid = names.new_checkpoint_id(session_id, self.policy.name)
        message = f"auto checkpoint ({'; '.join(reasons)})"[:200]
        await repo.open()
        # Another writer may have saved since this save, leaving ``commit`` unreferenced, and
        # a gc with no grace may have collected it: check the tree while gc is held off,
        # until the new ref holds it (cheap while the session's head is still ``commit``).
        await repo.point_ref(
            names.checkpoint_ref(cpid), commit, expected=None, holders=[names.session_ref(session_id)], message=message
        )
        if self.policy.keep_last is not None:
            await self.prune(repo, session_id)
        return cpid

    async def prune(self, repo: Repository, session_id: str) -> int:
        """Delete the session's automatic checkpoints beyond the newest ``keep_last``; returns how many."""
        keep = self.policy.keep_last
        if keep is None:
            return 0
        for _ in range(PRUNE_ATTEMPTS):
            refs = await repo.list_refs(names.checkpoint_prefix(session_id))
            autos = []
            for ref, target in refs.items():
                try:
                    _, label, stamp = names.parse_checkpoint_id(ref[len(names.CHECKPOINTS) :])
                except InvalidKeyError:
                    continue
                if label == self.policy.name:
                    autos.append((names.checkpoint_time(stamp), ref, target))
            autos.sort(reverse=True)
            doomed = {ref: target for _, ref, target in autos[keep:]}
            if not doomed:
                return 0
            try:
                await repo.delete_refs_at(doomed, message=f"auto checkpoint retention: keep last {keep}")
                return len(doomed)
            except ConflictError:  # another process pruned or checkpointed meanwhile
                continue
        raise ConflictError(f"checkpoints of {session_id!r} kept changing during {PRUNE_ATTEMPTS} prune attempts")

    def _track(self, session_id: str) -> _Track:
        track = self._tracks.get(session_id)
        if track is None:
            track = self._tracks[session_id] = _Track(0, self.policy.clock())
        return track

    def _values(self, state: Any) -> tuple[bytes, ...]:
        return tuple(_lookup(state, path) for path in self.policy.fields)
