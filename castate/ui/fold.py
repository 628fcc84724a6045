"""Values made small enough to send to the page: long strings, bytes and lists folded,
saying how much was left out."""

from __future__ import annotations

from typing import Any

FOLD = 2000  # characters of a str (bytes of a bytes value) sent before folding the rest
FOLD_ITEMS = 200  # items of a list sent before folding the rest


def fold(value: Any) -> Any:
    """A copy of ``value`` small enough to send: long str and bytes values become
    ``{"$folded": <head>, "$length": n}`` (bytes as ``{"$bytes": base64}`` inside), long
    lists keep their head and end with ``{"$more": n}``."""
    t = type(value)
    if t is str:
        return value if len(value) <= FOLD else {"$folded": value[:FOLD], "$length": len(value)}
    if t is bytes:
        return value if len(value) <= FOLD else {"$folded": value[:FOLD], "$length": len(value)}
    if t is dict:
        return {k: fold(v) for k, v in value.items()}
    if t is list:
        head = [fold(v) for v in value[:FOLD_ITEMS]]
        return head if len(value) <= FOLD_ITEMS else [*head, {"$more": len(value) - FOLD_ITEMS}]
    return value


__all__ = ["FOLD", "FOLD_ITEMS", "fold"]
