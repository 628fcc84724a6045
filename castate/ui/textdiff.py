"""Line and word diffs of two strings, for the diff view: what an appended report or an
edited prompt changed, instead of the first characters of each (which are often the same).

Built on ``difflib`` (the standard library): the common head and tail are cut first, so an
append to a 1 MB string compares only the new part; changed line pairs are diffed word by
word; unchanged runs keep ``CONTEXT`` lines around each change and report the rest as a skip.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

CONTEXT = 2  # unchanged lines kept on each side of a change
MAX_LINES = 4000  # lines of the changed middle compared line by line; beyond, shown as removed/added
MAX_ROWS = 400  # rows sent; the rest is counted
MAX_LINE = 2000  # characters of one line sent
WORD_PAIRS = 8  # a replaced block of up to this many line pairs is diffed word by word
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


def _line(text: str) -> str:
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + f"… ({len(text) - MAX_LINE} more chars)"


def words(a: str, b: str) -> list[list[str]]:
    """``[tag, text]`` runs turning line ``a`` into line ``b``: tag "=", "-" or "+"."""
    wa, wb = _WORDS.findall(a), _WORDS.findall(b)
    out: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(["=", "".join(wa[i1:i2])])
            continue
        if i2 > i1:
            out.append(["-", "".join(wa[i1:i2])])
        if j2 > j1:
            out.append(["+", "".join(wb[j1:j2])])
    return out


def text_diff(a: str, b: str) -> dict[str, Any]:
    """The rows of a unified diff of ``a`` into ``b``: ``{"t": "=", "-" or "+", "line": n,
    "text": ...}``, ``{"t": "~", "line": n, "words": [[tag, text], ...]}`` (one line edited),
    ``{"t": "skip", "n": k}`` (k unchanged lines not sent); with counts of lines added and
    removed and whether rows were cut (``truncated``)."""
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    head = 0
    while head < min(len(la), len(lb)) and la[head] == lb[head]:
        head += 1
    tail = 0
    while tail < min(len(la), len(lb)) - head and la[-1 - tail] == lb[-1 - tail]:
        tail += 1
    ma, mb = la[head : len(la) - tail], lb[head : len(lb) - tail]
    if len(ma) + len(mb) <= MAX_LINES:
        ops = difflib.SequenceMatcher(None, ma, mb, autojunk=False).get_opcodes()
    else:
        ops = [("replace", 0, len(ma), 0, len(mb))]
    rows: list[dict[str, Any]] = []
    added = removed = 0

    def equal(start: int, lines: list[str], first: bool, last: bool) -> None:
        n = len(lines)
        keep_head = 0 if first else min(CONTEXT, n)
        keep_tail = 0 if last else min(CONTEXT, n - keep_head)
        for k in range(keep_head):
            rows.append({"t": "=", "line": start + k + 1, "text": _line(lines[k])})
        if n - keep_head - keep_tail > 0:
            rows.append({"t": "skip", "n": n - keep_head - keep_tail})
        for k in range(n - keep_tail, n):
            rows.append({"t": "=", "line": start + k + 1, "text": _line(lines[k])})

    changed = [op for op in ops if op[0] != "equal"]
    if head:
        equal(0, la[:head], True, not changed and not tail)
    for op, i1, i2, j1, j2 in ops:
        if op == "equal":
            equal(head + j1, mb[j1:j2], False, False)
            continue
        removed += i2 - i1
        added += j2 - j1
        if op == "replace" and i2 - i1 == j2 - j1 and i2 - i1 <= WORD_PAIRS:
            for k in range(i2 - i1):
                rows.append({"t": "~", "line": head + j1 + k + 1, "words": words(_line(ma[i1 + k]), _line(mb[j1 + k]))})
            continue
        for k in range(i1, i2):
            rows.append({"t": "-", "line": head + k + 1, "text": _line(ma[k])})
        for k in range(j1, j2):
            rows.append({"t": "+", "line": head + k + 1, "text": _line(mb[k])})
    if tail:
        equal(len(lb) - tail, lb[len(lb) - tail :], not changed and not head, True)
    truncated = len(rows) > MAX_ROWS
    return {
        "rows": rows[:MAX_ROWS],
        "added": added,
        "removed": removed,
        "lines_a": len(la),
        "lines_b": len(lb),
        "truncated": truncated,
    }


__all__ = ["text_diff", "words"]
