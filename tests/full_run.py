"""How long the reliability tests run: short by default, the full run with ``CASTATE_FULL=1``.

The full run is what docs/reliability.md reports (``CASTATE_FULL=1 .venv/bin/python -m pytest
tests/test_crash.py ...``). Each count can also be set on its own.
"""

from __future__ import annotations

import os

FULL = os.environ.get("CASTATE_FULL") == "1"


def count(name: str, short: int, full: int) -> int:
    """``$name`` if set, else the full or the short count."""
    return int(os.environ.get(name) or (full if FULL else short))


CRASH_TRIALS = count("CASTATE_CRASH_TRIALS", 6, 300)  # random SIGKILLs; the chosen points run 1/25 of it in rounds
CONCURRENCY_SECONDS = count("CASTATE_CONCURRENCY_SECONDS", 4, 30)
FUZZ_EXAMPLES = count("CASTATE_FUZZ_EXAMPLES", 150, 3000)  # hypothesis examples per fuzz target
