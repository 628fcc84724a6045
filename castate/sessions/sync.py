"""SyncStateManager: the StateManager for code without an event loop.

Scripts, notebooks and thread-based frameworks call it like any blocking library::

    with castate.SyncStateManager("./state") as sm:
        sm.save_session("run-1", state)
        cp = sm.create_checkpoint("run-1", "before_api_call")
        state = sm.restore_checkpoint(cp)

Each manager owns one private event loop in a background thread, where its async
``StateManager`` lives; a call submits the coroutine to that loop and waits for its result.
So it works where ``asyncio.run`` does not (inside a running loop, such as Jupyter's), and
from several threads at once: their calls interleave on the one loop as concurrent tasks do
on an async manager, with the same semantics (a save that loses a race raises ConflictError).
Callbacks (``update_session``'s ``fn``, progress functions) run on that loop's thread and
must not call the manager back (that would wait for itself: RuntimeError instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from castate.keys import Secret
from castate.repository import Backend, BlobBackend, Default
from castate.sessions.auto import AutoCheckpoint
from castate.sessions.manager import RESTORE_INTO_SESSION_DEPRECATED, RestoreResult, StateManager
from castate.sessions.storage import StorageBackend

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[StateManager, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncStateManager, P], R]:
    """``StateManager.method`` as a blocking call, same parameters and docstring."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: SyncStateManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return cast(R, self._run(lambda sm: getattr(sm, name)(*args, **kwargs)))  # the method's own result

    return call


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """End the loop thread (also when a manager is dropped without close())."""
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    if thread is not threading.current_thread():
        thread.join()
        loop.close()


class SyncStateManager:
    """A ``StateManager`` with blocking methods (same names, parameters, results, errors).

    Takes what ``StateManager`` takes. Use it as ``with SyncStateManager(...) as sm:`` or
    call ``close()``: it ends the manager's loop thread and closes the store.
    """

    def __init__(
        self,
        storage_backend: StorageBackend | Backend | BlobBackend | str | os.PathLike[str] | None = None,
        *,
        default: Default | None = None,
        auto_checkpoint: AutoCheckpoint | None = None,
        key: Secret | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="castate-sync", daemon=True)
        self._thread.start()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop, self._loop, self._thread)

        async def make() -> StateManager:  # built on its loop, where its locks and tasks live
            return StateManager(storage_backend, default=default, auto_checkpoint=auto_checkpoint, key=key)

        try:
            self._sm = self._submit(make()).result()
        except BaseException:
            self._finalizer()
            raise

    def _submit(self, coro: Coroutine[Any, Any, R]) -> Future[R]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, start: Callable[[StateManager], Coroutine[Any, Any, R]]) -> R:
        if self._closed:
            raise RuntimeError("this SyncStateManager is closed")
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a SyncStateManager was called from its own loop thread (from a callback it runs): "
                "that call would wait for itself"
            )

        async def run() -> R:
            return await start(self._sm)

        return self._submit(run()).result()

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store and end the loop thread. Closing twice is a no-op. Calls still
        running in other threads are cancelled (they raise ``CancelledError``), never left
        waiting on a stopped loop."""
        if self._closed:
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("a SyncStateManager cannot be closed from a callback it runs")
        self._closed = True  # no new calls from here on

        async def shut() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self._sm.close()

        try:
            self._submit(shut()).result()
        finally:
            self._finalizer()

    def __enter__(self) -> SyncStateManager:
        self._run(lambda sm: sm.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the StateManager's methods, blocking ------------------------------------------------------

    save_session = _blocking(StateManager.save_session)
    update_session = _blocking(StateManager.update_session)
    load_session = _blocking(StateManager.load_session)
    list_sessions = _blocking(StateManager.list_sessions)
    delete_session = _blocking(StateManager.delete_session)
    create_checkpoint = _blocking(StateManager.create_checkpoint)
    restore_checkpoint = _blocking(StateManager.restore_checkpoint)
    list_checkpoints = _blocking(StateManager.list_checkpoints)
    pause_session = _blocking(StateManager.pause_session)
    resume_session = _blocking(StateManager.resume_session)
    resolve = _blocking(StateManager.resolve)
    history = _blocking(StateManager.history)
    diff = _blocking(StateManager.diff)
    fork = _blocking(StateManager.fork)
    reset_session = _blocking(StateManager.reset_session)
    forget = _blocking(StateManager.forget)
    gc = _blocking(StateManager.gc)
    fsck = _blocking(StateManager.fsck)
    repair_refs = _blocking(StateManager.repair_refs)
    roll_back_damaged = _blocking(StateManager.roll_back_damaged)
    stats = _blocking(StateManager.stats)
    export_session = _blocking(StateManager.export_session)
    import_session = _blocking(StateManager.import_session)

    def restore_into_session(
        self, source: str, session_id: str | None = None, *, expected: str | None = None
    ) -> RestoreResult:
        """Deprecated (a DeprecationWarning): the old name of ``reset_session(session_id,
        to=source, expected=expected)``, which says that it moves the session."""
        warnings.warn(RESTORE_INTO_SESSION_DEPRECATED, DeprecationWarning, stacklevel=2)
        return self.reset_session(session_id, to=source, expected=expected)

    def last_seen(self, session_id: str) -> str | None:
        """The head (commit id, hex) this manager last saved or loaded for the session, or None."""

        async def read(sm: StateManager) -> str | None:
            return sm.last_seen(session_id)

        return self._run(read)

    @contextlib.contextmanager
    def checkpointed(
        self, session_id: str, name: str = "checkpointed", *, metadata: dict[str, Any] | None = None
    ) -> Iterator[str]:
        """``with sm.checkpointed(sid, name) as cp:`` checkpoints on entry; if the block raises,
        the session's head moves back to that checkpoint and the error propagates."""
        section = self._run(_section(session_id, name, metadata))
        checkpoint_id = self._run(lambda sm: section.__aenter__())
        try:
            yield checkpoint_id
        except BaseException as exc:
            self._run(_leave(section, exc))
            raise
        self._run(_leave(section, None))


def _section(
    session_id: str, name: str, metadata: dict[str, Any] | None
) -> Callable[[StateManager], Coroutine[Any, Any, contextlib.AbstractAsyncContextManager[str]]]:
    async def make(sm: StateManager) -> contextlib.AbstractAsyncContextManager[str]:
        return sm.checkpointed(session_id, name, metadata=metadata)

    return make


def _leave(
    section: contextlib.AbstractAsyncContextManager[str], exc: BaseException | None
) -> Callable[[StateManager], Coroutine[Any, Any, bool | None]]:
    async def leave(sm: StateManager) -> bool | None:
        if exc is None:
            return await section.__aexit__(None, None, None)
        return await section.__aexit__(type(exc), exc, exc.__traceback__)

    return leave


__all__ = ["SyncStateManager"]
