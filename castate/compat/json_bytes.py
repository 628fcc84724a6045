"""Byte payloads as castate states: JSON documents by structure, read back byte for byte.

A JSON object or array is parsed and stored as its value, so successive versions of a
document share their unchanged parts. The key order of every dict that was not sorted is
recorded beside the value (castate kept dict keys sorted before object format 2; the record
stays so that payloads written by either version read the same), with the formatting,
chosen among the styles ``json.dumps`` produces. A document is stored this way only if
rendering the stored form reproduces the exact input bytes; anything else (other
formatting, duplicate keys, ``1e5``, non-JSON bytes) is stored as one bytes value.
"""

from __future__ import annotations

import json
from typing import Any

from castate.errors import StoreError

FORMAT_JSON = "json"
FORMAT_BYTES = "bytes"


def bytes_state(data: bytes) -> dict[str, Any]:
    """The state that stores ``data`` as plain bytes."""
    return {"format": FORMAT_BYTES, "data": data}


def json_state(data: bytes) -> dict[str, Any] | None:
    """The structural state of a JSON document whose rendering reproduces ``data``, or None."""
    if data[:1] not in (b"{", b"["):
        return None
    try:
        text = data.decode("utf-8")
        value = json.loads(text)
        order = _order(value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    newline = text.endswith("\n")
    body = text[:-1] if newline else text
    for style in _styles(body):
        state = {"format": FORMAT_JSON, "style": style, "newline": newline, "value": value, "order": order}
        try:
            if render(state) == data:
                return state
        except (ValueError, UnicodeEncodeError, RecursionError):
            continue
    return None


def render(state: Any) -> bytes:
    """The bytes a state made by ``json_state`` or ``bytes_state`` stands for."""
    fmt = state.get("format") if type(state) is dict else None
    if fmt == FORMAT_BYTES and type(state.get("data")) is bytes:
        data: bytes = state["data"]
        return data
    if fmt == FORMAT_JSON:
        try:
            style = state["style"]
            text = json.dumps(
                _ordered(state["value"], state["order"]),
                indent=style["indent"],
                separators=(style["item_sep"], style["key_sep"]),
                ensure_ascii=style["ascii"],
            )
        except (KeyError, TypeError) as exc:
            raise StoreError(f"stored JSON payload is malformed: {exc!r}") from None
        return (text + "\n" if state["newline"] else text).encode("utf-8")
    raise StoreError("the stored state is not a byte payload (no 'format': 'json' or 'bytes')")


def _styles(body: str) -> list[dict[str, Any]]:
    """The ``json.dumps`` styles that could have produced ``body``, likeliest first."""
    asciis = [False, True] if body.isascii() else [False]
    if body.startswith(("{\n", "[\n")):
        second = body.split("\n", 2)[1]
        indent = len(second) - len(second.lstrip(" "))
        return [{"indent": indent, "item_sep": ",", "key_sep": k, "ascii": a} for k in (": ", ":") for a in asciis]
    return [
        {"indent": None, "item_sep": i, "key_sep": k, "ascii": a} for i, k in ((",", ":"), (", ", ": ")) for a in asciis
    ]


def _order(value: Any) -> Any:
    """The key order of every unsorted dict under ``value`` (None when all are sorted).

    A dict gives ``{"k": [keys in order]}`` if its keys are not sorted and ``{"c": {key:
    order}}`` for children that need one; a list gives ``{"e": order}`` when every item needs
    the same one (an append then changes nothing here), else ``{"i": [order or None, ...]}``.
    """
    if type(value) is dict:
        out: dict[str, Any] = {}
        keys = list(value)
        if keys != sorted(keys):
            out["k"] = keys
        children = {k: o for k in keys if (o := _order(value[k])) is not None}
        if children:
            out["c"] = children
        return out or None
    if type(value) is list:
        items = [_order(v) for v in value]
        if all(o is None for o in items):
            return None
        if all(o == items[0] for o in items):
            return {"e": items[0]}
        return {"i": items}
    return None


def _ordered(value: Any, order: Any) -> Any:
    """``value`` with the key order ``order`` records (subtrees without an order are sorted)."""
    if order is None:
        return value
    if type(value) is dict:
        keys = order.get("k")
        if keys is None:
            keys = sorted(value)
        elif len(keys) != len(value) or set(keys) != value.keys():
            raise StoreError("stored JSON payload is malformed: key order does not match the keys")
        children = order.get("c", {})
        return {k: _ordered(value[k], children[k]) if k in children else value[k] for k in keys}
    if type(value) is list:
        if "e" in order:
            each = order["e"]
            return [_ordered(v, each) for v in value]
        items = order["i"]
        if len(items) != len(value):
            raise StoreError("stored JSON payload is malformed: list order does not match the list")
        return [_ordered(v, o) for v, o in zip(value, items, strict=True)]
    raise StoreError("stored JSON payload is malformed: an order for a value that is not a dict or list")
