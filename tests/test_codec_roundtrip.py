"""Property tests: encoding then decoding gives back exactly the value, types included."""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from castate.codec import Decoder, Encoder
from tests.strategies import same, scalars, states


def roundtrip(state: dict[str, Any]) -> Any:
    enc = Encoder()
    root, _ = enc.encode_root(state, None)
    return Decoder(dict(enc.objects)).build(root)


@given(states)
@settings(max_examples=150, deadline=None)
def test_roundtrip_is_exact(state: dict[str, Any]) -> None:
    assert same(roundtrip(state), state)


@given(st.lists(scalars, min_size=100, max_size=400))
@settings(max_examples=25, deadline=None)
def test_long_lists_roundtrip(items: list[Any]) -> None:
    state = {"items": items}
    assert same(roundtrip(state), state)


@given(states)
@settings(max_examples=100, deadline=None)
def test_equal_states_have_equal_ids(state: dict[str, Any]) -> None:
    """Equal values (key order included) get equal ids; the same items in another order do not."""
    a, _ = Encoder().encode_root(state, None)
    assert Encoder().encode_root(copy.deepcopy(state), None)[0] == a
    shuffled = dict(reversed(list(state.items())))
    assert (Encoder().encode_root(shuffled, None)[0] == a) == (list(shuffled) == list(state))


def _mutate(rng: random.Random, state: dict[str, Any], counter: list[int]) -> None:
    """One random edit of the kinds workflows make: appends, pops, edits, inserts, new keys."""
    counter[0] += 1
    n = counter[0]
    target = rng.choice(["log", "agents", "top"])
    if target == "top":
        state[rng.choice(["step", "status", "note"])] = rng.choice([n, f"s{n}", float(n) / 3, None, [n, n]])
        return
    lst = state["log"] if target == "log" else state["agents"][rng.choice(["a", "b"])]["memory"]
    op = rng.random()
    item = rng.choice(
        [
            {"role": "user", "content": f"message {n} " * rng.randint(1, 60), "n": n},
            f"text {n}",
            n,
            [n, {"k": n}],
            b"\x00bytes" * rng.randint(1, 3),
        ]
    )
    if op < 0.55 or not lst:
        for _ in range(rng.randint(1, 4)):
            lst.append(item)
    elif op < 0.65:
        del lst[: rng.randint(1, min(len(lst), 30))]
    elif op < 0.75:
        lst[rng.randrange(len(lst))] = item
    elif op < 0.85:
        lst.insert(rng.randrange(len(lst)), item)
    elif op < 0.92:
        del lst[rng.randrange(len(lst))]
    else:
        i = rng.randrange(len(lst))
        if type(lst[i]) is dict:
            lst[i]["content"] = f"edited {n}"
        else:
            lst.pop()


def test_incremental_encoding_matches_fresh_encoding() -> None:
    """Reusing the previous save's shadow must give the same objects as encoding from scratch."""
    for seed in range(6):
        rng = random.Random(seed)
        state: dict[str, Any] = {
            "log": [{"role": "system", "content": f"boot {i} " * 20, "i": i} for i in range(rng.randint(0, 400))],
            "agents": {"a": {"memory": list(range(300))}, "b": {"memory": []}},
        }
        counter = [0]
        shadow = None
        known: dict[bytes, Any] = {}
        for _ in range(120):
            _mutate(rng, state, counter)
            enc = Encoder()
            root, shadow = enc.encode_root(state, shadow)
            known.update(enc.objects)
            fresh = Encoder()
            fresh_root, _ = fresh.encode_root(state, None)
            assert root == fresh_root, f"seed {seed}: incremental encoding diverged"
            assert set(enc.objects) <= set(fresh.objects)
            assert same(Decoder(known).build(root), state)
