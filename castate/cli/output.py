"""How the castate command shows things: aligned tables and colour for people (colour only
on a terminal), JSON for scripts, progress bars (rich) on stderr for long work."""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from castate.codec.types import ndarray_type, readable, registered

WIDE = 200  # columns when stdout is not a terminal: never wrap ids in pipes and files


def _console(stream: Any) -> Console:
    tty = stream.isatty()
    return Console(
        file=stream,
        highlight=False,
        soft_wrap=not tty,
        width=None if tty else WIDE,
        no_color=not tty or "NO_COLOR" in os.environ,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON")


def _plain(value: Any) -> Any:
    """``value`` with its typed values as JSON objects: ``{"$datetime": "2026-...+00:00"}``,
    ``{"$UUID": ...}``, ``{"$Decimal": ...}``, ``{"$float": "nan"}``, ``{"$tuple": [...]}``,
    ``{"$set": [...]}`` (see docs/cli.md). The same object when it holds none."""
    t = type(value)
    if t is dict:
        out = {k: _plain(v) for k, v in value.items()}
        return value if all(out[k] is v for k, v in value.items()) else out
    if t is list:
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if t is tuple or t is set or t is frozenset:
        items = [_plain(v) for v in value]
        if t is not tuple:
            items.sort(key=lambda v: to_json(v, indent=False))  # a stable order for sets
        return {f"${t.__name__}": items}
    if t in _SCALARS:
        return value
    shown = readable(value)
    if shown is not None:
        return {f"${shown[0]}": shown[1]}
    user = registered(t)
    if user is not None:
        return {"$type": user.name, "value": _plain(user.to_state(value))}
    if t is ndarray_type():
        return {"$ndarray": _plain(value.tolist()), "dtype": value.dtype.str}
    return value


_SCALARS = frozenset((str, int, bool, bytes, type(None)))


def to_json(value: Any, *, indent: bool = True) -> str:
    """JSON text; bytes values become ``{"$bytes": "<base64>"}``, typed values as ``_plain`` says."""
    opts = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(_plain(value), default=_json_default, option=opts | orjson.OPT_NON_STR_KEYS).decode()


def short_json(value: Any, limit: int = 100) -> str:
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


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


class Output:
    """stdout for results, stderr for progress, warnings and errors."""

    def __init__(self) -> None:
        self.out = _console(sys.stdout)
        self.err = _console(sys.stderr)

    def json(self, value: Any) -> None:
        sys.stdout.write(to_json(value) + "\n")
        sys.stdout.flush()

    def line(self, text: str = "", style: str | None = None) -> None:
        self.out.print(escape(text), style=style)

    def rich(self, markup: str) -> None:
        self.out.print(markup)

    def warn(self, text: str) -> None:
        self.err.print(f"castate: warning: {escape(text)}", style="yellow")

    def error(self, text: str) -> None:
        self.err.print(f"castate: error: {escape(text)}", style="bold red", soft_wrap=True)

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = (), header: bool = True
    ) -> None:
        """Aligned columns, no borders; the header bold on a terminal."""
        if not rows:
            return
        table = Table(
            box=None, pad_edge=False, show_edge=False, show_header=header, header_style="bold", padding=(0, 2, 0, 0)
        )
        for name in columns:
            table.add_column(name, justify="right" if name in right else "left", no_wrap=True, overflow="fold")
        for row in rows:
            table.add_row(*(escape(str(c)) for c in row))
        with self.out.capture() as captured:
            self.out.print(table)
        text = "\n".join(line.rstrip() for line in captured.get().splitlines())
        self.out.file.write(text + "\n")
        self.out.file.flush()

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
