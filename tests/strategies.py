"""Hypothesis strategies for castate's value domain, and an exact (type-checking) equality."""

from __future__ import annotations

import datetime
import decimal
import random
from typing import Any

from hypothesis import strategies as st

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=12) | st.dictionaries(text, children, max_size=8),
    max_leaves=60,
)
states = st.dictionaries(text, values, max_size=8)

# -- the extended domain: typed values (format 2) --------------------------------------------------

zones = (
    st.none()
    | st.timezones()
    | st.builds(datetime.timezone, st.timedeltas(datetime.timedelta(hours=-23), datetime.timedelta(hours=23)))
    | st.builds(datetime.timezone, st.timedeltas(datetime.timedelta(hours=-2), datetime.timedelta(hours=2)), text)
)
hashable_typed = (
    st.datetimes(timezones=zones).flatmap(lambda d: st.sampled_from([d, d.replace(fold=1)]))
    | st.dates()
    | st.times(timezones=zones)
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=True)
    | st.sampled_from([float("inf"), float("-inf")])
)
hashables = st.recursive(
    scalars | hashable_typed,
    lambda children: st.tuples(children, children) | st.frozensets(children, max_size=6),
    max_leaves=10,
)
typed_values = st.recursive(
    scalars | hashable_typed | st.decimals(allow_nan=True) | st.just(float("nan")),
    lambda children: (
        st.lists(children, max_size=12)
        | st.dictionaries(text, children, max_size=8)
        | st.lists(children, max_size=6).map(tuple)
        | st.sets(hashables, max_size=6)
        | st.frozensets(hashables, max_size=6)
    ),
    max_leaves=30,
)
typed_states = st.dictionaries(text, typed_values, max_size=8)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (1, 1.0 and True are all different), dicts
    in the same key order, datetimes in the same zone, Decimals with the same digits."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is list or type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is set or type(a) is frozenset:
        return a == b and all(any(same(x, y) for y in b) for x in a)
    if type(a) is float:
        return (a == b or (a != a and b != b)) and str(a) == str(b)  # tells 0.0 from -0.0; NaN is NaN
    if type(a) is datetime.datetime or type(a) is datetime.time:
        return a == b and a.tzinfo == b.tzinfo and type(a.tzinfo) is type(b.tzinfo) and a.fold == b.fold
    if type(a) is decimal.Decimal:
        return str(a) == str(b)
    return bool(a == b)


# -- edits of long lists, for the incremental encoder's properties ----------------------------

# Equal under == but different values to castate (1, 1.0 and True, 0, 0.0, -0.0 and False,
# a tuple and a list, a set and a frozenset, the same instant in two zones, 1 and Decimal(1)).
lookalikes = st.sampled_from(
    [
        1,
        1.0,
        True,
        0,
        0.0,
        -0.0,
        False,
        None,
        "1",
        b"1",
        (1, 2),
        [1, 2],
        frozenset({1}),
        decimal.Decimal(1),
        decimal.Decimal("1.0"),
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
    ]
)
# Elements heavy enough that a few hundred of them make several runs.
elements = st.one_of(
    lookalikes,
    scalars,
    st.builds(
        lambda n, k: {"role": "user", "content": f"message {n} " * k, "n": n}, st.integers(0, 10**6), st.integers(1, 60)
    ),
    st.builds(lambda n: "x" * n, st.integers(2000, 3000)),
    st.builds(
        lambda n, k: {"at": datetime.date(2026, 1, 1 + n % 28), "tags": {f"t{n}", "x"}, "pair": (n, "y" * k)},
        st.integers(0, 10**6),
        st.integers(1, 400),
    ),
    st.builds(lambda n: [n, {"k": n}], st.integers(0, 9)),
)
LIST_OPS = (
    "append",  # lst.append(v)
    "extend",  # lst.extend([v] * k)
    "trim",  # del lst[:k]
    "pop_front",  # lst.pop(0)
    "slice_trim",  # lst[:k] = []
    "window",  # lst[:] = lst[k:] (the same objects: a trim)
    "trim_append",  # del lst[:k]; lst.append(v)
    "trim_edit_append",  # del lst[:k]; lst[i] = v; lst.append(v)
    "set",  # lst[i] = v
    "lookalike",  # lst[i] = a value equal to it under == but of another type
    "insert",  # lst.insert(i, v)
    "delete",  # del lst[i]
    "pop",  # lst.pop()
    "edit_inside",  # lst[i]["content"] = ... for a dict element
    "rebind",  # the list is replaced by a new list object: state[key] = lst[k:]
)
list_edits = st.lists(
    st.tuples(st.sampled_from(LIST_OPS), st.floats(0, 1, exclude_max=True), st.integers(1, 40), elements),
    min_size=1,
    max_size=20,
)


def apply_list_edit(state: dict[str, Any], key: str, edit: tuple[str, float, int, Any]) -> None:
    """Apply one edit from ``list_edits`` to ``state[key]`` (a list, plain or tracked), in place."""
    op, where, k, value = edit
    lst = state[key]
    if not lst and op not in ("append", "extend", "insert"):
        op = "append"
    i = int(where * len(lst)) if lst else 0
    k = min(k, len(lst)) if lst else k
    if op == "append":
        lst.append(value)
    elif op == "extend":
        lst.extend([value] * k)
    elif op == "trim":
        del lst[:k]
    elif op == "pop_front":
        lst.pop(0)
    elif op == "slice_trim":
        lst[:k] = []
    elif op == "window":
        lst[:] = lst[k:]
    elif op == "trim_append":
        del lst[:k]
        lst.append(value)
    elif op == "trim_edit_append":
        del lst[:k]
        if lst:
            lst[int(where * len(lst))] = value
        lst.append(value)
    elif op == "set":
        lst[i] = value
    elif op == "lookalike":
        old = lst[i]
        family = [1, 1.0, True] if old == 1 else [0, 0.0, -0.0, False] if old == 0 else [1, 1.0]
        choices = [c for c in family if not same(c, old)]
        lst[i] = choices[k % len(choices)]
    elif op == "insert":
        lst.insert(i, value)
    elif op == "delete":
        del lst[i]
    elif op == "pop":
        lst.pop()
    elif op == "edit_inside":
        target = lst[i]
        if isinstance(target, dict):
            target["content"] = f"edited {k}"
        else:
            lst[i] = value
    elif op == "rebind":
        state[key] = lst[k:]
    else:
        raise AssertionError(op)


# Short lists (inline or one run) and long ones (several runs).
list_lengths = st.one_of(st.integers(0, 60), st.integers(250, 700))


def initial_list(n: int, seed: int) -> list[Any]:
    """A long list of mixed elements (messages, scalars, blobs), the same for the same arguments."""
    rng = random.Random(seed)
    pick = [
        lambda i: {"role": "user", "content": f"message number {i} " * 20, "i": i},
        lambda i: i,
        lambda i: float(i),
        lambda i: i % 2 == 0,
        lambda i: f"s{i}",
        lambda i: b"\x00" * rng.randint(1, 400),
        lambda i: "y" * rng.randint(2000, 2600),
        lambda i: None,
    ]
    return [rng.choice(pick)(i) for i in range(n)]
