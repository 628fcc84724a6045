"""How values and times are written for people and scripts, the same in the CLI and the UI:
JSON text in which bytes and typed values stay recognisable (``{"$bytes": "<base64>"}``,
``{"$datetime": ...}``, see docs/cli.md), and UTC times in ISO 8601.

Below both the CLI and the UI, so neither imports the other for it.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from castate.codec.types import ndarray_type, readable, registered


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


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


__all__ = ["iso_time", "to_json"]
