"""Session lifecycle: pause and resume, and critical sections that roll back to a checkpoint.

Pausing and resuming record a commit of the session's current state (no state is encoded
again) whose metadata holds ``paused``, ``paused_at``, ``resumed_at`` and ``pause_reason``.
Later saves carry those keys forward, so the store always tells whether a session is
paused and when it last paused and resumed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from castate.errors import NotFoundError
from castate.repository import Repository
from castate.repository import refs as names
from castate.sessions.auto import AutoCheckpointer


class Sessions(Protocol):
    """What a critical section needs of the session manager (``StateManager`` has it), named
    here so that this module does not import the manager that imports it."""

    auto_checkpointer: AutoCheckpointer | None

    async def create_checkpoint(
        self, session_id: str, name: str | None = None, *, metadata: dict[str, Any] | None = None
    ) -> str: ...

    async def reset_session(self, session_id: str | None = None, *, to: str, expected: str | None = None) -> Any: ...


LIFECYCLE_KEYS = ("paused", "paused_at", "resumed_at", "pause_reason")


async def carried_meta(repo: Repository, ref: str) -> dict[str, Any]:
    """The lifecycle keys of the head's metadata, which the next save of ``ref`` keeps."""
    head = await repo.head_commit(ref)
    if head is None:
        return {}
    meta = head[1].meta
    return {k: meta[k] for k in LIFECYCLE_KEYS if k in meta}


async def _head(repo: Repository, session_id: str) -> tuple[str, bytes, dict[str, Any]]:
    ref = names.session_ref(session_id)
    cid = await repo.head(ref)
    if cid is None:
        raise NotFoundError(f"no session {session_id!r}")
    return ref, cid, dict((await repo.read_commit(cid)).meta)


async def pause(repo: Repository, session_id: str, reason: str | None) -> str:
    """Mark the session paused (a commit of its current state); returns the head commit (hex)."""
    ref, cid, meta = await _head(repo, session_id)
    if meta.get("paused"):
        return cid.hex()
    meta.update(paused=True, paused_at=time.time())
    if reason is not None:
        meta["pause_reason"] = reason
    else:
        meta.pop("pause_reason", None)
    new = await repo.recommit(ref, cid, meta=meta, name="pause", message=f"pause {session_id}"[:200])
    return new.hex()


async def resume(repo: Repository, session_id: str) -> None:
    """Mark the session resumed (a commit of its current state) if it is paused."""
    ref, cid, meta = await _head(repo, session_id)
    if not meta.get("paused"):
        return
    meta.update(paused=False, resumed_at=time.time())
    await repo.recommit(ref, cid, meta=meta, name="resume", message=f"resume {session_id}"[:200])


@contextlib.asynccontextmanager
async def checkpointed(
    sm: Sessions, repo: Repository, session_id: str, name: str, metadata: dict[str, Any] | None
) -> AsyncIterator[str]:
    """Checkpoint on entry; if the block raises, move the session back to it and re-raise."""
    checkpoint_id = await sm.create_checkpoint(session_id, name, metadata=metadata)
    try:
        yield checkpoint_id
    except GeneratorExit:
        raise
    except BaseException as exc:  # cancellation too: the critical section did not complete
        try:
            await sm.reset_session(session_id, to=checkpoint_id)
            if sm.auto_checkpointer is not None:
                sm.auto_checkpointer.forget(session_id)
        except Exception as err:
            exc.add_note(f"castate: could not restore session {session_id!r} to {checkpoint_id}: {err!r}")
        raise
