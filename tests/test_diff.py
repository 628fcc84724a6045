"""Structural diff: exact changes, RFC 6902 patches that rebuild the target, and cost that
grows with the change (objects read, counted by an instrumented backend)."""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import castate
import castate.repository.snapshot
from castate.backends import RefUpdate
from castate.codec import Commit, Encoder, encode_commit
from castate.codec.nodes import encode_node
from castate.codec.objects import KIND_COMMIT, KIND_DICT, encode_frame, object_id
from castate.errors import CorruptObjectError
from castate.repository.diff import diff_trees, to_patch
from tests.memory_objects import MemoryObjects
from tests.strategies import same, states, typed_states, values


class CountingBackend(MemoryObjects):
    """A memory backend that counts the object ids it is asked to read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.calls = 0

    async def get_objects(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        self.reads += len(ids)
        self.calls += 1
        return await super().get_objects(ids)


def root_of(state: dict[str, Any]) -> bytes:
    return Encoder().encode_root(state, None)[0]


async def roots(a: dict[str, Any], b: dict[str, Any]) -> tuple[MemoryObjects, bytes, bytes]:
    backend = MemoryObjects()
    repo = castate.Repository(backend)
    ra = await repo.save("sessions/a", a)
    rb = await repo.save("sessions/b", b)
    return backend, ra.root, rb.root


def apply(a: dict[str, Any], changes: list[castate.repository.diff.Change]) -> Any:
    return jsonpatch.apply_patch(copy.deepcopy(a), to_patch(changes))


async def check_roundtrip(a: dict[str, Any], b: dict[str, Any]) -> list[Any]:
    backend, ra, rb = await roots(a, b)
    changes = await diff_trees(backend, ra, rb)
    patched = apply(a, changes)
    assert same(patched, b) or root_of(patched) == root_of(b)
    assert root_of(patched) == root_of(b)  # exact: types, -0.0, bytes
    assert await diff_trees(backend, ra, ra) == []
    assert await diff_trees(backend, rb, rb) == []
    return changes


# -- exact results -------------------------------------------------------------------------------


def messages(n: int, tag: str = "m") -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 else "assistant", "content": f"{tag} {i} " + "x" * (i % 37)} for i in range(n)]


async def test_identical_states_have_no_changes() -> None:
    state = {"messages": messages(3000), "n": 1}
    backend, ra, rb = await roots(state, copy.deepcopy(state))
    assert ra == rb
    assert await diff_trees(backend, ra, rb) == []


async def test_append_k_items_to_a_long_list_is_k_adds() -> None:
    a = {"messages": messages(10_000), "step": 1}
    b = copy.deepcopy(a)
    b["messages"].extend(messages(7, "new"))
    changes = await check_roundtrip(a, b)
    assert [(c.op, c.path) for c in changes] == [("add", f"/messages/{10_000 + i}") for i in range(7)]
    assert [c.new for c in changes] == messages(7, "new")


async def test_scalar_and_nested_changes() -> None:
    a = {"config": {"model": "m1", "limits": {"tokens": 100}}, "tags": ["a", "b"], "gone": 1}
    b = {"config": {"model": "m2", "limits": {"tokens": 100, "calls": 3}}, "tags": ["a", "b", "c"], "new": None}
    changes = await check_roundtrip(a, b)
    # removed keys first, then the rest in the new key order (adds then append in that order)
    assert [c.to_dict() for c in changes] == [
        {"op": "remove", "path": "/gone", "old": 1},
        {"op": "replace", "path": "/config/model", "old": "m1", "new": "m2"},
        {"op": "add", "path": "/config/limits/calls", "new": 3},
        {"op": "add", "path": "/tags/2", "new": "c"},
        {"op": "add", "path": "/new", "new": None},
    ]


async def test_types_are_told_apart() -> None:
    a = {"x": 1, "y": 0.0, "z": True, "w": b"\x00"}
    b = {"x": 1.0, "y": -0.0, "z": 1, "w": "\x00"}
    changes = await check_roundtrip(a, b)
    assert {c.path for c in changes} == {"/x", "/y", "/z", "/w"}
    assert all(c.op == "replace" for c in changes)


async def test_pointer_escaping() -> None:
    a = {"a/b": {"c~d": 1}, "": 0}
    b = {"a/b": {"c~d": 2}, "": 1}
    changes = await check_roundtrip(a, b)
    assert sorted(c.path for c in changes) == ["/", "/a~1b/c~0d"]


async def test_edits_inside_a_long_list() -> None:
    a = {"messages": messages(5000)}
    b = copy.deepcopy(a)
    b["messages"][100]["content"] = "edited"
    del b["messages"][2500:2503]
    b["messages"].insert(4000, {"role": "system", "content": "inserted"})
    changes = await check_roundtrip(a, b)
    assert ("replace", "/messages/100/content") in [(c.op, c.path) for c in changes]
    assert sum(1 for c in changes if c.op == "remove") == 3
    assert [c.new for c in changes if c.op == "add"] == [{"role": "system", "content": "inserted"}]


async def test_big_dict_and_large_values() -> None:
    a = {"docs": {f"doc{i:05d}": f"text {i} " * 30 for i in range(3000)}, "blob": b"\x01" * 200_000}
    b = copy.deepcopy(a)
    b["docs"]["doc01234"] = "changed"
    del b["docs"]["doc00007"]
    b["docs"]["new"] = "hello"
    b["blob"] = b"\x02" + b["blob"][1:]
    changes = await check_roundtrip(a, b)
    assert [(c.op, c.path) for c in changes] == [
        ("remove", "/docs/doc00007"),
        ("replace", "/docs/doc01234"),
        ("add", "/docs/new"),
        ("replace", "/blob"),
    ]


async def test_list_becomes_dict_and_inline_becomes_node() -> None:
    a = {"v": [1, 2], "small": {"a": 1}, "grow": [1]}
    b = {"v": {"0": 1}, "small": {"a": 1, "b": "y" * 400}, "grow": list(range(2000))}
    await check_roundtrip(a, b)
    await check_roundtrip(b, a)


async def test_diff_through_the_state_manager_across_sessions() -> None:
    sm = castate.StateManager(MemoryObjects())
    await sm.save_session("one", {"messages": messages(50), "who": "one"})
    cp = await sm.create_checkpoint("one", "start")
    await sm.save_session("two", {"messages": messages(51), "who": "two"})
    changes = await sm.diff(cp, "two")
    assert [(c.op, c.path) for c in changes] == [("add", "/messages/50"), ("replace", "/who")]
    head = (await sm.list_sessions())[0].head
    assert await sm.diff(head, "one") == []


# -- cost grows with the change ------------------------------------------------------------------


async def test_diff_of_two_checkpoints_reads_objects_in_proportion_to_the_change() -> None:
    backend = CountingBackend()
    sm = castate.StateManager(backend)
    state = {"task": "long", "messages": messages(10_000)}
    await sm.save_session("s", state)
    first = await sm.create_checkpoint("s", "before")
    state["messages"].extend(messages(5, "later"))
    state["messages"][42]["content"] = "edited"
    await sm.save_session("s", state)
    second = await sm.create_checkpoint("s", "after")
    total = sum([1 async for _ in backend.iter_objects()])

    tree = len(await castate.repository.snapshot.fetch_tree(backend, (await sm.repository.resolve("sessions/s")).root))

    backend.reads = backend.calls = 0
    changes = await sm.diff(first, second)
    assert [(c.op, c.path) for c in changes] == [
        ("replace", "/messages/42/content"),
        *[("add", f"/messages/{10_000 + i}") for i in range(5)],
    ]
    # The root, the list's index path and the changed runs on each side, and the two
    # commits: a few dozen objects out of a tree of hundreds.
    print(f"diff read {backend.reads} objects in {backend.calls} calls; tree {tree}, store {total} objects")
    assert tree >= 200
    assert backend.reads <= 30
    assert backend.calls <= 8  # batched by level, not one call per object


# -- properties ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states)
async def test_diff_of_a_state_with_itself_is_empty(a: dict[str, Any]) -> None:
    backend, ra, rb = await roots(a, copy.deepcopy(a))
    assert await diff_trees(backend, ra, rb) == []


@SETTINGS
@given(states, states)
async def test_applying_the_diff_gives_the_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    await check_roundtrip(a, b)


edits = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "replace", "append"]), st.integers(0, 10**6), values),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 3000), edits, st.booleans())
async def test_edits_of_long_lists_and_big_dicts(n: int, ops: list[tuple[str, int, Any]], as_dict: bool) -> None:
    """Long containers (runs under indexes) edited at random places still round-trip."""
    base = [{"i": i, "text": f"item {i}"} for i in range(n)]
    a: dict[str, Any] = {"items": base}
    items = copy.deepcopy(base)
    for op, pos, value in ops:
        at = pos % (len(items) + 1)
        if op == "insert":
            items.insert(at, value)
        elif op == "append":
            items.append(value)
        elif items and op == "delete":
            del items[at % len(items)]
        elif items:
            items[at % len(items)] = value
    if as_dict:
        a = {"items": {f"k{i:05d}": v for i, v in enumerate(base)}}
        b: dict[str, Any] = {"items": {f"k{i:05d}": v for i, v in enumerate(items)}}
    else:
        b = {"items": items}
    await check_roundtrip(a, b)


async def test_a_node_with_inline_values_nested_too_deep_is_corrupt_not_a_recursion_error() -> None:
    """A crafted (hash-valid) dict node whose body nests 1,000 lists inline: diff copied and
    compared entries recursively and raised RecursionError; fsck did not notice."""
    backend = MemoryObjects()
    await backend.open()
    content = encode_node([], b"\x81\xa1a" + b"\x91" * 1000 + b"\x01")
    root = object_id(KIND_DICT, content)
    commit = encode_commit(Commit(root, (), "s", 1))
    cid = object_id(KIND_COMMIT, commit)
    await backend.commit(
        [(root, encode_frame(KIND_DICT, content)), (cid, encode_frame(KIND_COMMIT, commit))],
        [RefUpdate("sessions/s", cid, None)],
    )
    sm = castate.StateManager(backend)
    await sm.save_session("t", {"a": 1})
    with pytest.raises(CorruptObjectError, match="Recursion limit"):
        await sm.diff("s", "t")
    report = await sm.fsck(quarantine=False)
    assert [p.id for p in report.problems] == [root]


# -- key order and typed values (format 2) --------------------------------------------------------


async def test_a_key_moved_in_a_dict_replaces_the_dict() -> None:
    """Applied in order, the changes give the new key order: a moved key replaces its dict,
    an appended key is an add."""
    a = {"agents": {"planner": 1, "coder": 2, "critic": 3}, "n": 1}
    moved = {"agents": {"coder": 2, "planner": 1, "critic": 3}, "n": 1}
    changes = await check_roundtrip(a, moved)
    assert [(c.op, c.path) for c in changes] == [("replace", "/agents")]
    appended = {"agents": {"planner": 1, "coder": 2, "critic": 3, "new": 4}, "n": 1}
    changes = await check_roundtrip(a, appended)
    assert [(c.op, c.path) for c in changes] == [("add", "/agents/new")]
    big_a = {"cache": {f"k{i}": "v" * 50 for i in range(400)}}
    big_b = {"cache": dict(reversed(big_a["cache"].items()))}
    changes = await check_roundtrip(big_a, big_b)
    assert [(c.op, c.path) for c in changes] == [("replace", "/cache")]


async def test_typed_values_diff_as_their_python_values() -> None:
    import datetime as dt
    import uuid

    when = dt.datetime(2026, 12, 5, 2, 10, 23, tzinfo=dt.UTC)
    a = {"at": when, "ids": (uuid.UUID(int=1),), "tags": {"a"}}
    b = {"at": when.astimezone(dt.timezone(dt.timedelta(hours=1))), "ids": (uuid.UUID(int=1),), "tags": {"a", "b"}}
    changes = await check_roundtrip(a, b)  # the same instant in another zone is a change
    assert [(c.op, c.path, c.new) for c in changes] == [("replace", "/at", b["at"]), ("replace", "/tags", {"a", "b"})]


@given(typed_states, typed_states)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_applying_the_diff_gives_the_target_with_typed_values(a: dict[str, Any], b: dict[str, Any]) -> None:
    await check_roundtrip(a, b)
