"""A writer for crash tests: saves and checkpoints deterministic states until it is killed.

``python -m tests.crash_writer STORE MODE STEPS_JSON [MAX_SAVES]`` where MODE is ``local``,
``rotate`` (a new volume every 16 KiB), ``gc`` (local, plus a gc with no grace and no reflog
every few saves), ``snapshot`` (local, with refs.snapshot rewritten every ~512 bytes of
journal), ``sqlite`` or ``sqlite-gc`` (packs in ``STORE/store.db``),
``s3`` or ``s3-gc`` (STORE is an ``s3://`` URL) and
With ``CASTATE_KEY`` (or ``CASTATE_PASSWORD``) set, the writer makes its store encrypted
(tests/encrypted_support.py). STEPS_JSON maps each session to the step it continues from; with MAX_SAVES it exits after
that many saves (a crash point that was never reached). It writes a ledger line to stdout, flushed,
before and after every call, so the test knows what was in flight when the process died
and what castate had promised (a call that returned):

    start                     the store is open
    save <session> <step>     save_session is called
    saved <session> <step> <commit>
    cp <session> <step>       create_checkpoint is called
    cpok <session> <step> <checkpoint id>
    gc / gcok                 gc is called / returned
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson

import castate
from castate.keys import secret_from_env

SESSIONS = ("alpha", "beta")
GC_EVERY = 5


def state_at(session: str, step: int) -> dict[str, Any]:
    """The state a session has after ``step``: a growing message list, changing scratch data,
    a bytes blob, and on some steps a large document (chunked) or a long list (an index)."""
    state: dict[str, Any] = {
        "session": session,
        "step": step,
        "messages": [{"i": i, "content": f"{session} message {i} " * (5 + i % 20)} for i in range(step % 60 * 4)],
        "scratch": f"scratch {session} {step} " * 40,
        "blob": bytes([step % 256]) * 3000,
    }
    if step % 4 == 1:
        state["document"] = "".join(f"line {i} of {session} at {step // 8}\n" for i in range(4000))
    if step % 3 == 0:
        state["numbers"] = list(range(step, step + 3000))
    return state


def manager(path: str, mode: str) -> castate.StateManager:
    key = secret_from_env()  # an encrypted store's key: it makes a new store encrypted
    if mode.startswith("s3"):  # packs in an S3 bucket: ``path`` is the store's URL
        return castate.StateManager(castate.Repository.at(path, key=key) if key else path)
    if mode.startswith("sqlite"):  # packs in an SQLite file inside the directory
        os.makedirs(path, exist_ok=True)
        url = f"sqlite:///{os.path.join(path, 'store.db')}"
        return castate.StateManager(castate.Repository.at(url, key=key) if key else url)
    if mode == "snapshot":  # refs.snapshot rewritten every ~512 bytes of journal
        from castate.backends.local import journal

        journal.SNAPSHOT_MIN_TAIL = 512
    # "rotate": a new volume every few saves, so kills land while one is created
    backend = castate.LocalBackend(path, volume_size=16 << 10 if mode == "rotate" else 64 << 20)
    return castate.StateManager(castate.Repository(backend, key=key))


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


async def main(path: str, mode: str, steps: dict[str, int], max_saves: int | None) -> None:
    sm = manager(path, mode)
    await sm.repository.open(create=True)  # a writer: creates a URL store that does not exist yet
    say("start")
    n = 0
    while max_saves is None or n < max_saves:
        for session in SESSIONS:
            step = steps[session]
            say("save", session, step)
            commit = await sm.save_session(session, state_at(session, step))
            say("saved", session, step, commit)
            if step % 2 == 0:
                say("cp", session, step)
                # Half the checkpoints carry metadata: a commit of their own instead of a copied ref.
                meta = {"step": step} if step % 4 == 0 else None
                cp = await sm.create_checkpoint(session, f"step-{step}", metadata=meta)
                say("cpok", session, step, cp)
            steps[session] = step + 1
            n += 1
            if mode in ("gc", "sqlite-gc", "s3-gc") and n % GC_EVERY == 0:
                say("gc")
                await sm.gc(grace=0, reflog_expire=0)
                say("gcok")
    await sm.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], orjson.loads(sys.argv[3]), int(sys.argv[4]) if sys.argv[4:] else None))
