"""Hypothesis strategies for castate's value domain, and an exact (type-checking) equality."""

from __future__ import annotations

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


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (1, 1.0 and True are all different)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return a == b and str(a) == str(b)  # tells 0.0 from -0.0
    return bool(a == b)
