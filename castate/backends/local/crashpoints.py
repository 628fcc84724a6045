"""Crash injection for tests: the local backend kills its own process at a named point.

With ``CASTATE_CRASH_POINT=<point>`` in the environment, the process sends itself SIGKILL
the first time a save reaches that point (or the (n+1)-th time, with
``CASTATE_CRASH_SKIP=<n>``). Points that tear a write (``*-mid-*``) first write half of
the bytes. Without the variable, ``reach`` and ``tear`` return at once. docs/reliability.md
lists the points and what each crash must leave behind.
"""

from __future__ import annotations

import os
import signal

POINTS = {
    "volume-created": "a new volume file exists, its header not yet written",
    "volume-mid-record": "half of a save's blob records written to a volume",
    "volume-before-sync": "a save's blob records written to a volume, not yet fdatasync'ed",
    "volume-after-sync": "a save's blobs durable in a volume, the ref journal not yet touched",
    "journal-mid-record": "half of a ref journal record written",
    "journal-before-sync": "a ref journal record written, not yet fdatasync'ed",
    "journal-after-sync": "the ref moved and durable, the call not yet returned",
    "file-before-rename": "a whole-file write (rewritten journal, config) before its rename",
    "snapshot-before-rename": "a new refs.snapshot (cache of the replayed journal) written, not yet renamed into place",
    "gc-before-unlink": "gc moved the live blobs out of a volume (or none were left), the volume not yet removed",
}

_point = os.environ.get("CASTATE_CRASH_POINT") or None
if _point is not None and _point not in POINTS:
    raise ValueError(f"CASTATE_CRASH_POINT={_point!r} is not a crash point; known: {', '.join(POINTS)}")
_skip = int(os.environ.get("CASTATE_CRASH_SKIP", "0") or 0)


def _due(name: str) -> bool:
    global _skip
    if name != _point:
        return False
    if _skip > 0:
        _skip -= 1
        return False
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reach(name: str) -> None:
    """Kill this process here if the environment names this point."""
    if _point is not None and _due(name):
        _die()


def tear(name: str, fd: int, data: bytes | memoryview) -> None:
    """Write the first half of ``data`` to ``fd`` and kill this process, if the environment names this point."""
    if _point is not None and _due(name):
        os.write(fd, memoryview(data)[: len(data) // 2])
        _die()
