"""Opt-in change tracking: tracked containers stamp their ancestors, and saves skip what did not change."""

from __future__ import annotations

import copy
import random
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import castate
from castate.codec import Decoder, Encoder, chunking
from castate.codec import encoder as encoder_module
from castate.codec.tracking import TrackedDict, TrackedList, tracked
from castate.errors import UnsupportedValueError
from tests.strategies import apply_list_edit, initial_list, list_edits, list_lengths, same


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


def test_front_trims_count_removed_elements_and_keep_the_shape() -> None:
    lst = tracked([{"n": i} for i in range(20)])
    shape, appended = lst._shape, lst._appended
    trims: list[tuple[Any, int]] = [
        (lambda: lst.__delitem__(slice(None, 3)), 3),  # del lst[:3]
        (lambda: lst.pop(0), 1),
        (lambda: lst.__delitem__(0), 1),  # del lst[0]
        (lambda: lst.__setitem__(slice(0, 2), []), 2),  # lst[:2] = []
        (lambda: lst.__setitem__(slice(None), lst[4:]), 4),  # lst[:] = lst[4:], the same objects
        (lambda: lst.__delitem__(slice(-100, 1)), 1),  # a front slice written another way
    ]
    for trim, k in trims:
        front, version, before = lst._front, lst._version, plain(lst)
        trim()
        assert lst._front == front + k
        assert lst._version > version
        assert plain(lst) == before[k:]
        assert lst._shape == shape
    lst.append({"n": 99})
    lst.extend([{"n": 100}, {"n": 101}])
    assert lst._appended == appended + 3
    assert lst._shape == shape


@pytest.mark.parametrize(
    "change",
    [
        lambda lst: lst.__delitem__(slice(1, 3)),  # del lst[1:3]
        lambda lst: lst.__setitem__(slice(0, 2), [{"n": -1}]),  # replaced, not trimmed
        lambda lst: lst.__setitem__(slice(None), [*lst[1:], {"n": -1}]),  # not the old tail
        lambda lst: lst.__setitem__(slice(None, None, 2), [{}] * 5),
        lambda lst: lst.__delitem__(slice(None, None, -1)),
        lambda lst: lst.pop(),
        lambda lst: lst.pop(3),
        lambda lst: lst.__delitem__(-1),
        lambda lst: lst.insert(0, {"n": -1}),
        lambda lst: lst.remove(lst[0]),
        lambda lst: lst.reverse(),
    ],
)
def test_other_removals_change_the_shape(change: Any) -> None:
    lst = tracked([{"n": i} for i in range(10)])
    shape, front = lst._shape, lst._front
    change(lst)
    assert lst._shape > shape
    assert lst._front == front


def test_clearing_is_a_front_trim_of_everything() -> None:
    state = tracked({"log": [{"n": i} for i in range(400)]})
    root, shadow = Encoder().encode_root(state, None)
    state["log"].clear()
    assert state["log"]._front == 400
    root, shadow = Encoder().encode_root(state, shadow)
    assert root == Encoder().encode_root({"log": []}, None)[0]
    state["log"].extend({"n": i} for i in range(300))
    root, shadow = Encoder().encode_root(state, shadow)
    assert root == Encoder().encode_root(plain(state), None)[0]


@given(list_lengths, st.integers(0, 2**32), list_edits)
@settings(max_examples=60, deadline=None)
def test_tracked_list_edits_encode_as_a_fresh_encoding_does(n: int, seed: int, edits: list[Any]) -> None:
    state = tracked({"log": initial_list(n, seed), "n": 0})
    _, shadow = Encoder().encode_root(state, None)
    known: dict[bytes, Any] = {}
    for edit in edits:
        apply_list_edit(state, "log", edit)
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        known.update(enc.objects)
        assert root == Encoder().encode_root(plain(state), None)[0], edit[0]
    fresh = Encoder()
    fresh.encode_root(plain(state), None)
    assert same(Decoder({**fresh.objects, **known}).build(root), plain(state))


@given(
    list_lengths,
    st.integers(0, 2**32),
    list_edits,
    st.sampled_from([(1, bytearray(b"x")), 2**70, bytearray(b"x"), {1: "x"}]),
    st.floats(0, 1, exclude_max=True),
)
@settings(max_examples=40, deadline=None)
def test_out_of_domain_values_in_tracked_lists_are_refused(
    n: int, seed: int, edits: list[Any], bad: Any, where: float
) -> None:
    state = tracked({"log": initial_list(n, seed)})
    _, shadow = Encoder().encode_root(state, None)
    for edit in edits:
        apply_list_edit(state, "log", edit)
        _, shadow = Encoder().encode_root(state, shadow)
    lst = state["log"]
    if lst:
        del lst[:1]
    if lst:
        lst[int(where * len(lst))] = bad  # where an old value was, after a front trim
    else:
        lst.append(bad)
    with pytest.raises(UnsupportedValueError) as incremental:
        Encoder().encode_root(state, shadow)
    with pytest.raises(UnsupportedValueError) as fresh:
        Encoder().encode_root(plain(state), None)
    assert incremental.value.path == fresh.value.path


@pytest.mark.parametrize("how", ["del", "pop", "slice", "window"])
def test_a_tracked_sliding_window_costs_what_an_append_costs(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 300-message window trimmed by one and appended by one: the stamps say so, so no old run
    is digested and only the new message is encoded (plus, once per run, the run the trim reaches)."""
    state = tracked({"messages": [{"content": f"message {i} " * 30} for i in range(300)]})
    _, shadow = Encoder().encode_root(state, None)
    digested: list[int] = []
    real = encoder_module.run_digest
    monkeypatch.setattr(
        encoder_module, "run_digest", lambda items, t=False: digested.append(len(items)) or real(items, t)
    )
    steps, work, digests = 300, [], []
    for step in range(steps):
        lst = state["messages"]
        if how == "del":
            del lst[:1]
        elif how == "pop":
            lst.pop(0)
        elif how == "slice":
            lst[:1] = []
        else:
            lst[:] = lst[-299:]
        lst.append({"content": f"new {step} " * 30})
        digested.clear()
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        work.append(enc.encoded)
        digests.append(len(digested))
        assert root == Encoder().encode_root(plain(state), None)[0]
    assert statistics.median(work) == 2  # the root's one key and the new message
    assert sum(work) <= 6 * steps  # re-encoding the window would be 300 per save
    assert max(digests) <= 4  # the new runs only: never the ~5 old runs of the window


def test_a_tracked_list_replaced_by_its_own_tail_is_realigned() -> None:
    """``state["messages"] = state["messages"][1:]`` makes a new tracked list; the old one, unchanged,
    tells where its elements went."""
    state = tracked({"messages": [{"content": f"message {i} " * 30} for i in range(300)]})
    _, shadow = Encoder().encode_root(state, None)
    for step in range(50):
        state["messages"] = state["messages"][1:]
        state["messages"].append({"content": f"new {step} " * 30})
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        assert root == Encoder().encode_root(plain(state), None)[0]
        assert enc.encoded <= 2 + chunking.RUN_MAX // encoder_module.REF_WEIGHT


def test_a_tracked_big_dict_losing_old_keys_encodes_the_runs_around_them() -> None:
    state = tracked({"cache": {f"call-{i:06d}": {"hits": i, "url": f"u{i}"} for i in range(10_000)}})
    _, shadow = Encoder().encode_root(state, None)
    nxt = 10_000
    for step in range(20):
        cache = state["cache"]
        del cache[min(cache)]
        cache[f"call-{nxt:06d}"] = {"hits": 0, "url": f"u{nxt}"}
        cache[f"call-{nxt - 5_000:06d}"]["hits"] += 1
        nxt += 1
        largest = max(run.count for run in shadow.children["cache"].runs)  # type: ignore[union-attr]
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        assert enc.encoded <= 1 + 6 * largest < len(cache) / 2, enc.encoded
        if step % 5 == 4:
            assert root == Encoder().encode_root(plain(state), None)[0]


def test_a_tracked_window_whose_new_message_is_edited_in_place() -> None:
    """Streaming into the message just appended changes an element (``_child``), so the stamps
    no longer vouch for the old runs: digests check them, the remnant of the trimmed run is
    checked against its run's digest with the trimmed elements kept from the last save, and
    only the new message is encoded."""
    state = tracked({"messages": [{"content": f"message {i} " * 30} for i in range(300)]})
    _, shadow = Encoder().encode_root(state, None)
    work = []
    for step in range(100):
        lst = state["messages"]
        del lst[:1]
        lst.append({"content": ""})
        lst[-1]["content"] += f"streamed {step} " * 30
        enc = Encoder()
        root, shadow = enc.encode_root(state, shadow)
        work.append(enc.encoded)
        assert root == Encoder().encode_root(plain(state), None)[0]
    assert statistics.median(work) == 2  # the root's one key and the new message


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_tracked_list_reordered_by_a_failed_sort_is_saved() -> None:
    """list.sort() that raises part way leaves the list permuted; TrackedList.sort stamps
    only after a successful sort, so the next save skips the changed list."""
    rng = random.Random(1)
    state = castate.tracked({"log": [rng.random() for _ in range(200)] + ["x"]})
    _, shadow = Encoder().encode_root(state, None)
    before = list(state["log"])
    with pytest.raises(TypeError):
        state["log"].sort()
    assert state["log"] != before  # the failed sort did reorder the list in place
    root, _ = Encoder().encode_root(state, shadow)
    assert root == Encoder().encode_root(_plain(state), None)[0]
