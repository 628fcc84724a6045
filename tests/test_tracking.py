"""Opt-in change tracking: tracked containers stamp their ancestors, and saves skip what did not change."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

import castate
from castate.codec import Decoder, Encoder
from castate.codec import encoder as encoder_module
from castate.tracking import TrackedDict, TrackedList, tracked
from tests.strategies import same


def plain(value: Any) -> Any:
    """A plain deep copy (tracked containers pickle/copy as plain ones)."""
    return copy.deepcopy(value)


def test_tracked_converts_and_keeps_sharing() -> None:
    msg = {"role": "user", "content": "hi"}
    state = tracked({"messages": [msg], "agents": {"a": {"memory": [msg]}}, "n": 1})
    assert type(state) is TrackedDict
    assert type(state["messages"]) is TrackedList
    assert state["messages"][0] is state["agents"]["a"]["memory"][0]
    assert state == {"messages": [msg], "agents": {"a": {"memory": [msg]}}, "n": 1}
    assert type(plain(state)) is dict


def test_mutations_stamp_every_ancestor() -> None:
    state = tracked({"messages": [{"content": "a"}], "agents": {"a": {"memory": []}}})
    msg = state["messages"][0]
    state["agents"]["a"]["memory"].append(msg)
    before = (state._version, state["messages"]._version, state["agents"]._version)
    msg["content"] = "edited"
    after = (state._version, state["messages"]._version, state["agents"]._version)
    assert all(b < a for b, a in zip(before, after, strict=True))
    assert state["messages"]._child == state["messages"]._version  # a change inside an element
    shape = state["messages"]._shape
    state["messages"].append({"content": "b"})
    assert state["messages"]._shape == shape  # appends keep the shape
    state["messages"].insert(0, {"content": "c"})
    assert state["messages"]._shape > shape


def test_values_stored_into_a_tracked_tree_are_converted() -> None:
    state = tracked({"messages": []})
    raw = {"role": "user", "parts": [1, 2]}
    state["messages"].append(raw)
    assert type(state["messages"][0]) is TrackedDict
    assert type(state["messages"][0]["parts"]) is TrackedList
    state["extra"] = {"k": [{"x": 1}]}
    assert type(state["extra"]["k"][0]) is TrackedDict
    kept = tracked({"role": "tool"})
    state["messages"].append(kept)
    assert state["messages"][-1] is kept  # tracked values are not copied again


def _mutate(rng: random.Random, state: Any, n: int) -> None:
    target = rng.choice(["log", "agents", "top", "nested"])
    if target == "top":
        key = rng.choice(["step", "status", "note"])
        if rng.random() < 0.2 and key in state:
            del state[key]
        else:
            state[key] = rng.choice([n, f"s{n}", float(n) / 7, None, [n, n], {"k": n}])
        return
    if target == "nested":
        agent = state["agents"][rng.choice(["a", "b"])]
        agent["turns"] = agent.get("turns", 0) + 1
        if rng.random() < 0.3:
            agent.setdefault("notes", {})[f"n{n}"] = "x" * rng.randint(1, 400)
        return
    lst = state["log"] if target == "log" else state["agents"][rng.choice(["a", "b"])]["memory"]
    op = rng.random()
    item = {"role": "user", "content": f"message {n} " * rng.randint(1, 60), "n": n}
    if op < 0.6 or not lst:
        lst.append(item)
        if target == "log" and rng.random() < 0.5:
            state["agents"]["a"]["memory"].append(lst[-1])  # shared, as frameworks do
    elif op < 0.68:
        del lst[: rng.randint(1, min(len(lst), 30))]
    elif op < 0.76:
        lst[rng.randrange(len(lst))] = item
    elif op < 0.84:
        lst.insert(rng.randrange(len(lst)), item)
    elif op < 0.9:
        lst.pop()
    else:
        victim = lst[rng.randrange(len(lst))]
        if isinstance(victim, dict):
            victim["content"] = f"edited {n}"  # in place, inside the list


@pytest.mark.parametrize("seed", range(4))
def test_tracked_saves_match_plain_encoding(seed: int) -> None:
    rng = random.Random(seed)
    state = tracked(
        {
            "log": [{"role": "system", "content": f"boot {i} " * 20, "i": i} for i in range(rng.randint(0, 600))],
            "agents": {"a": {"memory": []}, "b": {"memory": list(range(300))}},
        }
    )
    shadow = None
    known: dict[bytes, Any] = {}
    for n in range(150):
        _mutate(rng, state, n)
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        known.update(enc.objects)
        fresh_root, _ = Encoder().encode_root(plain(state), None)
        assert root == fresh_root, f"seed {seed}, step {n}: tracked encoding diverged"
        assert same(Decoder(known).build(root), plain(state))


def test_appending_to_a_tracked_list_does_not_look_at_old_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    state = tracked({"messages": [{"content": f"message {i} " * 30} for i in range(10_000)], "step": 0})
    _, shadow = Encoder().encode_root(state, None)
    calls = []
    real = encoder_module.run_digest
    monkeypatch.setattr(encoder_module, "run_digest", lambda items, t=False: calls.append(len(items)) or real(items, t))
    for step in range(1, 11):
        state["messages"].append({"content": f"new {step} " * 30})
        state["step"] = step
        enc = Encoder()
        _, shadow = enc.encode_root(state, shadow)
        assert len(enc.objects) <= 6
    assert sum(calls) < 10 * 200  # only the tail runs are digested, never the 10,000 old elements
    calls.clear()
    _, shadow = Encoder().encode_root(state, shadow)  # nothing changed: nothing at all is looked at
    assert calls == []


async def test_state_manager_with_a_tracked_state(tmp_path: Any) -> None:
    sm = castate.StateManager(tmp_path / "store")
    state = tracked({"messages": [], "step": 0})
    for step in range(50):
        state["messages"].append({"role": "assistant", "content": f"step {step}"})
        state["step"] = step
        await sm.save_session("t", state)
        if step == 25:
            cp = await sm.create_checkpoint("t", "mid")
    other = castate.StateManager(tmp_path / "store")
    assert await other.load_session("t") == plain(state)
    assert (await other.restore_checkpoint(cp))["step"] == 25
    await sm.save_session("copy", state)  # one tracked state saved under two sessions
    state["step"] = 99
    await sm.save_session("copy", state)
    assert (await other.load_session("copy"))["step"] == 99
    assert (await other.load_session("t"))["step"] == 49
    await sm.close()
    await other.close()
