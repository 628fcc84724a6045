"""Opt-in change tracking: dicts and lists that remember when they (or anything under them) changed.

``castate.tracked(state)`` turns a state's dicts and lists into ``TrackedDict`` and
``TrackedList``. Every mutation stamps the container and all its ancestors with a new
version, so a save can skip, in O(1), every subtree that has not changed since the
session's previous save, and encode a list whose only changes were appends and front
trims (a sliding window) without looking at the elements it kept. Checkpoint CPU then
grows with what changed, not with the state.

The tracked tree owns its containers: a plain dict or list stored into it is converted
(copied) on the way in, so keep working through the state (``state["messages"][-1]``),
or build new values with ``castate.tracked(...)`` when you keep references to them.
A value tracked once is never copied again, so one message can sit in two lists.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable
from typing import Any, SupportsIndex

_clock = itertools.count(1)


def _adopt(value: Any, parent: TrackedDict | TrackedList) -> Any:
    """The tracked form of ``value`` (converted if plain), registered under ``parent``."""
    t = type(value)
    if t is dict or t is list:
        value = _convert(value, {})
    elif t is not TrackedDict and t is not TrackedList:
        return value
    parents = value._parents
    if not any(p is parent for p in parents):
        parents.append(parent)
    return value


def _convert(value: Any, memo: dict[int, Any]) -> Any:
    t = type(value)
    if t is not dict and t is not list:
        return value
    seen = memo.get(id(value))
    if seen is not None:
        return seen
    if t is dict:
        out: Any = TrackedDict()
        memo[id(value)] = out
        for k, v in value.items():
            dict.__setitem__(out, k, _link(_convert(v, memo), out))
    else:
        out = TrackedList()
        memo[id(value)] = out
        list.extend(out, [_link(_convert(v, memo), out) for v in value])
    return out


def _link(child: Any, parent: Any) -> Any:
    if (type(child) is TrackedDict or type(child) is TrackedList) and not any(p is parent for p in child._parents):
        child._parents.append(parent)
    return child


def _stamp(node: TrackedDict | TrackedList, version: int) -> None:
    """Mark ``node`` and its ancestors changed at ``version`` (each visited once)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n._version == version:
            continue
        n._version = version
        for p in n._parents:
            if type(p) is TrackedList:
                p._child = version
            stack.append(p)


def tracked(value: Any) -> Any:
    """A tracked copy of a state (dicts and lists converted; shared containers stay shared)."""
    return _convert(value, {})


class TrackedDict(dict[str, Any]):
    """A dict that stamps itself and its ancestors on every change."""

    __slots__ = ("_parents", "_version")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._parents: list[Any] = []
        self._version = next(_clock)
        if args or kwargs:
            self.update(*args, **kwargs)

    def _touch(self) -> None:
        _stamp(self, next(_clock))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _adopt(value, self))
        self._touch()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._touch()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            super().__setitem__(k, _adopt(v, self))
        self._touch()

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[override,misc]  # in place: returns self, as dict does
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return self[key]

    def pop(self, key: Any, *default: Any) -> Any:
        had = key in self
        value = super().pop(key, *default)
        if had:
            self._touch()
        return value

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._touch()
        return item

    def clear(self) -> None:
        super().clear()
        self._touch()

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


class TrackedList(list[Any]):
    """A list that stamps itself and its ancestors on every change.

    Besides its version it keeps ``_shape``, the version of its last change other than an
    append or a front trim, and ``_child``, the version of the last change inside one of its
    elements. Two counters say how many elements were ever appended (``_appended``) and
    removed from the front (``_front``). A list whose only changes since a save were
    appends and front trims (``del l[:k]``, ``pop(0)``, ``l[:k] = []``, ``l[:] = l[-n:]``)
    is the saved list without its first ``_front - front`` elements plus what was
    appended: the encoder continues from the saved runs instead of looking at elements.
    """

    __slots__ = ("_appended", "_child", "_front", "_parents", "_shape", "_version")

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        super().__init__()
        self._parents: list[Any] = []
        self._version = self._shape = self._child = next(_clock)
        self._front = self._appended = 0
        if iterable:
            super().extend(_adopt(v, self) for v in iterable)

    def _grow(self, n: int) -> None:
        self._appended += n
        _stamp(self, next(_clock))

    def _trim(self, n: int) -> None:
        self._front += n
        _stamp(self, next(_clock))

    def _reshape(self) -> None:
        v = next(_clock)
        self._shape = v
        _stamp(self, v)

    def _front_count(self, index: slice) -> int:
        """How many elements ``index`` names at the front of the list (0 if it is not a front slice)."""
        start, stop, step = index.indices(len(self))
        return stop if start == 0 and step == 1 and stop > 0 else 0

    def append(self, value: Any) -> None:
        super().append(_adopt(value, self))
        self._grow(1)

    def extend(self, values: Iterable[Any]) -> None:
        adopted = [_adopt(v, self) for v in values]
        super().extend(adopted)
        self._grow(len(adopted))

    def __iadd__(self, values: Iterable[Any]) -> TrackedList:  # type: ignore[misc]  # any iterable, as list.__iadd__ takes
        self.extend(values)
        return self

    def insert(self, index: SupportsIndex, value: Any) -> None:
        super().insert(index, _adopt(value, self))
        self._reshape()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            values = [_adopt(v, self) for v in value]
            front = self._front_count(index)
            # ``l[:k] = []`` and ``l[:] = l[-n:]`` (the same objects put back) are front trims:
            # the front slice's last len(values) elements stay where they were, the k before go.
            k = front - len(values)
            trim = front > 0 and k >= 0 and all(map(operator.is_, values, list.__getitem__(self, slice(k, front))))
            super().__setitem__(index, values)
            if not trim:
                self._reshape()
            elif k:
                self._trim(k)  # (k == 0: the same objects were put back, nothing changed)
        else:
            super().__setitem__(index, _adopt(value, self))
            self._reshape()

    def __delitem__(self, index: Any) -> None:
        if isinstance(index, slice):
            front = self._front_count(index)
            n = len(self)
            super().__delitem__(index)
            if front:
                self._trim(front)
            elif len(self) != n:
                self._reshape()
        else:
            n = len(self)
            super().__delitem__(index)
            i = operator.index(index)
            if i == 0 or i == -n:
                self._trim(1)
            else:
                self._reshape()

    def pop(self, index: SupportsIndex = -1) -> Any:
        n = len(self)
        value = super().pop(index)
        i = operator.index(index)
        if i == 0 or i == -n:
            self._trim(1)
        else:
            self._reshape()
        return value

    def remove(self, value: Any) -> None:
        super().remove(value)
        self._reshape()

    def clear(self) -> None:
        n = len(self)
        super().clear()
        if n:
            self._trim(n)

    # A sort that raises part way (items that do not compare) may have reordered the list
    # already: the change is recorded whatever happens.
    def sort(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().sort(*args, **kwargs)
        finally:
            self._reshape()

    def reverse(self) -> None:
        try:
            super().reverse()
        finally:
            self._reshape()

    def __imul__(self, n: SupportsIndex) -> TrackedList:
        try:
            super().__imul__(n)
        finally:
            self._reshape()
        return self

    def __reduce__(self) -> Any:
        return (list, (list(self),))


__all__ = ["TrackedDict", "TrackedList", "tracked"]
