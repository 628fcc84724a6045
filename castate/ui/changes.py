"""How a diff is sent to the page: runs of list items added (or removed) one after another
as one entry, which replaced strings get a line and word diff, and the path filter."""

from __future__ import annotations

from typing import Any

from castate.repository.diff import Change
from castate.ui.fold import fold
from castate.ui.textdiff import text_diff

TEXT_DIFF_FROM = 120  # characters from which a replaced one-line string gets a word diff
RUN_MIN = 3  # consecutive list items added or removed that a diff sends as one run
RUN_ITEMS = 100  # items of a run sent


def present(changes: list[Change], path: str, offset: int, limit: int) -> dict[str, Any]:
    """The changes under ``path`` ("" for all) as entries (a change, or a run), from
    ``offset``, at most ``limit``: ``changes``, ``matching`` (changes under the path),
    ``entries`` and ``truncated``."""
    chosen = [c for c in changes if _under(c.path, path)] if path else changes
    entries = _runs(chosen)
    page = entries[offset : offset + limit]
    out = []
    for e in page:
        if isinstance(e, list):
            out.append(_run(e))
            continue
        d = fold(e.to_dict())
        if e.op == "replace" and type(e.old) is str and type(e.new) is str and _text_like(e.old, e.new):
            d["text_diff"] = text_diff(e.old, e.new)
        out.append(d)
    return {
        "matching": len(chosen),
        "entries": len(entries),
        "changes": out,
        "truncated": offset + len(page) < len(entries),
    }


def by_key(changes: list[Change]) -> dict[str, dict[str, int]]:
    """Counts of each op by top-level key ("/messages"; "/" for the root itself)."""
    out: dict[str, dict[str, int]] = {}
    for c in changes:
        top = "/" + c.path.split("/")[1] if c.path else "/"
        row = out.setdefault(top, {"add": 0, "remove": 0, "replace": 0})
        row[c.op] += 1
    return out


def _index_of(path: str) -> tuple[str, int] | None:
    parent, _, last = path.rpartition("/")
    return (parent, int(last)) if last.isascii() and last.isdigit() else None


def _runs(changes: list[Change]) -> list[Change | list[Change]]:
    """``changes`` with each run of at least RUN_MIN adds (or removes) of consecutive items of
    one list gathered into a list."""
    out: list[Change | list[Change]] = []
    run: list[Change] = []
    at: tuple[str, int] | None = None

    def close() -> None:
        if len(run) >= RUN_MIN:
            out.append(list(run))
        else:
            out.extend(run)
        run.clear()

    for c in changes:
        where = _index_of(c.path) if c.op != "replace" else None
        if where is not None and run and at is not None and c.op == run[0].op and where == (at[0], at[1] + 1):
            run.append(c)
            at = where
            continue
        close()
        if where is not None:
            run.append(c)
            at = where
        else:
            out.append(c)
    close()
    return out


def _run(run: list[Change]) -> dict[str, Any]:
    first = _index_of(run[0].path)
    assert first is not None
    roles: dict[str, int] = {}
    for c in run:
        v = c.new if c.op == "add" else c.old
        role = v.get("role") or v.get("type") if isinstance(v, dict) else None
        if isinstance(role, str):
            roles[role] = roles.get(role, 0) + 1
    return {
        "run": True,
        "op": run[0].op,
        "path": first[0],
        "first": first[1],
        "count": len(run),
        "roles": roles,
        "items": [fold(c.to_dict()) for c in run[:RUN_ITEMS]],
    }


def _text_like(a: str, b: str) -> bool:
    """Whether two strings read better as a line and word diff than side by side: text with
    lines, or long enough that their first characters may be all one sees."""
    return "\n" in a or "\n" in b or max(len(a), len(b)) > TEXT_DIFF_FROM


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


__all__ = ["by_key", "present"]
