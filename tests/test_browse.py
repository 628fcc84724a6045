"""Browsing a stored state one level at a time: pages of children, summaries, and reads
that stay small however large the state is."""

from __future__ import annotations

import pytest

import castate
from castate.repository.browse import Item, Level, level, list_range
from castate.repository.tree import Loader, Ref, entry_at
from tests.memory_objects import MemoryObjects


async def saved(state: dict) -> tuple[MemoryObjects, bytes]:
    backend = MemoryObjects()
    repo = castate.Repository(backend)
    result = await repo.save("sessions/s", state)
    return backend, result.root


BIG = {
    "task": "demo",
    "count": 3,
    "ratio": 0.5,
    "done": False,
    "none": None,
    "blob": b"\x00\x01\x02",
    "small": {"a": 1, "b": [1, 2]},
    "messages": [{"role": "user", "content": f"message {i} " * 10} for i in range(5000)],
    "doc": "".join(f"line {i}\n" for i in range(200_000)),  # about 2 MB: a chunked str
    "long": "é" * 1000,
}


async def test_root_page_sums_up_children_and_reads_little() -> None:
    backend, root = await saved(BIG)
    loader = Loader(backend)
    page = await level(loader, root, [], preview=20)
    assert isinstance(page, Level)
    assert page.kind == "dict"
    assert page.total == len(BIG)
    items = {i.key: i for i in page.items}
    assert [i.key for i in page.items] == list(BIG)  # in insertion order
    assert items["task"] == Item("task", "str", 4, "demo", True)
    assert items["count"] == Item("count", "int", None, 3, True)
    assert items["ratio"].kind == "float"
    assert items["done"] == Item("done", "bool", None, False, True)
    assert items["none"] == Item("none", "null", None, None, True)
    assert items["blob"] == Item("blob", "bytes", 3, b"\x00\x01\x02", True)
    assert items["small"] == Item("small", "dict", 2, None, False)
    assert items["messages"] == Item("messages", "list", 5000, None, False)
    assert items["doc"].kind == "str"
    assert items["doc"].size == len(BIG["doc"])
    assert items["doc"].value == BIG["doc"][:20]
    assert not items["doc"].complete
    assert items["long"].size == 2000  # UTF-8 bytes
    assert items["long"].value == "é" * 20
    # The root node, one object per stored child, and the first chunk of the document:
    # nothing of the 5,000 messages' runs or of the rest of the document.
    assert loader.read <= 5


async def test_list_pages_read_only_the_runs_that_hold_them() -> None:
    backend, root = await saved(BIG)
    loader = Loader(backend)
    page = await level(loader, root, ["messages"], offset=2500, limit=3)
    assert isinstance(page, Level)
    assert (page.kind, page.total, page.offset) == ("list", 5000, 2500)
    assert [i.key for i in page.items] == [2500, 2501, 2502]
    assert all(i.kind == "dict" and i.size == 2 for i in page.items)
    inner = await level(loader, root, ["messages", "2501"])
    assert isinstance(inner, Level)
    assert {i.key: i.value for i in inner.items} == {"role": "user", "content": "message 2501 " * 10}
    assert loader.read <= 8


async def test_list_range_matches_the_list() -> None:
    backend, root = await saved(BIG)
    loader = Loader(backend)
    entry = await entry_at(loader, root, ["messages"])
    assert type(entry) is Ref
    for start, stop in [(0, 1), (0, 5000), (123, 4567), (4990, 6000), (7000, 8000), (10, 10)]:
        got = await loader.values(await list_range(loader, entry.id, start, stop))
        assert got == BIG["messages"][start:stop]


async def test_inline_containers_and_scalars_at_a_path() -> None:
    backend, root = await saved(BIG)
    loader = Loader(backend)
    page = await level(loader, root, ["small", "b"])
    assert page == Level("list", 2, 0, [Item(0, "int", None, 1, True), Item(1, "int", None, 2, True)])
    assert await level(loader, root, ["task"]) == Item(None, "str", 4, "demo", True)
    with pytest.raises(castate.NotFoundError):
        await level(loader, root, ["nope"])
    with pytest.raises(castate.NotFoundError):
        await level(loader, root, ["messages", "5000"])


async def test_large_dicts_page_in_key_order() -> None:
    state = {f"k{i:05d}": {"v": "x" * 50, "i": i} for i in range(3000)}
    backend, root = await saved(state)
    page = await level(Loader(backend), root, [], offset=1000, limit=10)
    assert isinstance(page, Level)
    assert page.total == 3000
    assert [i.key for i in page.items] == [f"k{i:05d}" for i in range(1000, 1010)]
