"""How the castate command shows things: aligned tables and colour for people (colour only
on a terminal, and never with ``NO_COLOR``), JSON for scripts, progress bars (rich) on
stderr for long work.

Nothing a table shows is cut. Piped output has no width at all: every row is whole on one
line. On a terminal too narrow for a table, the columns a command marked as droppable go
first (a note under the table names them), then a free-text column wraps inside its own
column between words; ids, names and times stay whole (the terminal folds a line that is still too long).
Text from the store (session ids, checkpoint names, metadata) is escaped before it reaches
the terminal: a control character shows as ``\\x1b``, ``\\n`` etc., so a name cannot move the
cursor or forge a row. JSON output is exact.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from castate.codec.types import readable
from castate.display import to_json

MIN_WRAP = 16  # a wrapped free-text column keeps at least this many cells


def color_allowed(stream: Any) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org: any value)."""
    return bool(stream.isatty()) and "NO_COLOR" not in os.environ


def _console(stream: Any) -> Console:
    tty = stream.isatty()
    return Console(
        file=stream,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,  # rich never wraps nor crops: tables fit themselves, lines stay whole
        width=None if tty else 10**6,
        force_terminal=tty,
        no_color=not color_allowed(stream),
    )


# -- text ----------------------------------------------------------------------------------------

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Invisible characters that reorder or hide text (bidi controls, line separators): as
# dangerous in a listing as ESC, and escaped like it.
_INVISIBLE = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) and bidi or line-separator control
    written as an escape (``\\x1b``, ``\\n``, ``\\u202e``): safe to print on a terminal."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif ch in _INVISIBLE or unicodedata.category(ch) in ("Cc", "Cs"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def short_json(value: Any, limit: int = 100) -> str:
    """Compact JSON for a one-line summary (a diff line); longer text ends in a visible ``…``."""
    text = to_json(value, indent=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_value(value: Any, limit: int = 100) -> str:
    """A value on one line: a typed scalar as ``datetime 2026-12-05T02:10:23+00:00``, else JSON."""
    shown = readable(value)
    if shown is not None:
        return f"{shown[0]} {shown[1]}"
    return short_json(value, limit)


def local_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def human_bytes(n: int | None) -> str:
    """Bytes in binary units (KiB, MiB, ...), the one unit system of every castate output."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value):,} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n:,} B"  # pragma: no cover


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 ref``, ``2 refs``, ``1,024 objects``: a count with its noun, thousands separated."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


# -- tables --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. ``drop``: 0 never dropped; on a terminal too narrow for the table, the
    highest ``drop`` goes first. ``wrap``: free text that may wrap inside its column."""

    name: str
    right: bool = False
    drop: int = 0
    wrap: bool = False


def fit(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None, header: bool = True
) -> tuple[list[list[str]], list[str]]:
    """The lines of cells to print (one row may become several when a column wraps) and the
    names of the columns dropped to fit ``width`` (None: no limit, nothing dropped or wrapped)."""
    shown = list(range(len(columns)))
    widths = [max([cell_len(r[i]) for r in rows] + ([cell_len(columns[i].name)] if header else [])) for i in shown]

    def total() -> int:
        return sum(widths[i] for i in shown) + 2 * (len(shown) - 1)

    dropped: list[str] = []
    wrap_at: dict[int, int] = {}
    if width is not None:
        wrap = [i for i in shown if columns[i].wrap]
        # Wrapping comes before dropping when it alone makes the table fit.
        while total() > width:
            excess = total() - width
            room = [(i, widths[i] - max(MIN_WRAP, cell_len(columns[i].name))) for i in wrap if i in shown]
            if sum(max(0, r) for _, r in room) >= excess:
                for i, r in room:
                    take = min(max(0, r), excess)
                    widths[i] -= take
                    wrap_at[i] = widths[i]
                    excess -= take
                break
            candidates = [i for i in shown if columns[i].drop]
            if not candidates:
                break
            victim = max(candidates, key=lambda i: (columns[i].drop, i))
            shown.remove(victim)
            dropped.append(columns[victim].name)
    lines: list[list[str]] = []
    if header:
        lines.append([columns[i].name for i in shown])
    for row in rows:
        parts = [
            textwrap.wrap(row[i], wrap_at[i], break_on_hyphens=False, break_long_words=False) or [""]
            if i in wrap_at
            else [row[i]]
            for i in shown
        ]
        for k in range(max(len(p) for p in parts)):
            lines.append([p[k] if k < len(p) else "" for p in parts])
    return [_pad(line, [widths[i] for i in shown], [columns[i].right for i in shown]) for line in lines], dropped


def _pad(cells: list[str], widths: list[int], right: list[bool]) -> list[str]:
    out = []
    for cell, w, r in zip(cells, widths, right, strict=True):
        gap = " " * max(0, w - cell_len(cell))
        out.append(gap + cell if r else cell + gap)
    return out


class Output:
    """stdout for results, stderr for progress, warnings and errors."""

    def __init__(self) -> None:
        self.out = _console(sys.stdout)
        self.err = _console(sys.stderr)

    @property
    def color(self) -> bool:
        return not self.out.no_color

    def json(self, value: Any) -> None:
        sys.stdout.write(to_json(value) + "\n")
        sys.stdout.flush()

    def _style(self, console: Console, style: str | None) -> str:
        """``style`` where colour is allowed; none at all otherwise (NO_COLOR: no bold or dim either)."""
        return (style or "") if not console.no_color else ""

    def line(self, text: str = "", style: str | None = None) -> None:
        self.out.print(Text(printable(text), style=self._style(self.out, style)))

    def warn(self, text: str) -> None:
        self.err.print(Text(f"castate: warning: {printable(text)}", style=self._style(self.err, "yellow")))

    def error(self, text: str) -> None:
        self.err.print(Text(f"castate: error: {printable(text)}", style=self._style(self.err, "bold red")))

    def table(
        self,
        columns: Sequence[str | Column],
        rows: Sequence[Sequence[Any]],
        *,
        right: Sequence[str] = (),
        header: bool = True,
    ) -> None:
        """Aligned columns, no borders, the header bold on a terminal; nothing cut (see the module)."""
        if not rows:
            return
        cols = [c if isinstance(c, Column) else Column(c, right=c in right) for c in columns]
        cells = [[printable(str(c)) for c in row] for row in rows]
        width = self.out.width if self.out.is_terminal else None
        lines, dropped = fit(cols, cells, width, header)
        for n, line in enumerate(lines):
            text = "  ".join(line).rstrip()
            self.out.print(Text(text, style=self._style(self.out, "bold" if header and n == 0 else None)))
        if dropped:
            what = ", ".join(dropped)
            self.line(f"({what} hidden to fit {width} columns: see --json or a wider terminal)", "dim")

    @contextlib.contextmanager
    def progress(self, description: str) -> Iterator[Callable[[str, int, int | None], None]]:
        """A progress bar on stderr (only on a terminal); yields update(phase, done, total)."""
        if not self.err.is_terminal:
            yield lambda phase, done, total: None
            return
        bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        )
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int | None) -> None:
            task = tasks.get(phase)
            if task is None:
                task = tasks[phase] = bar.add_task(f"{description}: {phase}", total=total)
            bar.update(task, completed=done, total=total)

        with bar:
            yield update
