"""CastateSaver: LangGraph's conformance suite, the ref layout, sharing, maintenance and threads."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

import castate
from castate.errors import InvalidKeyError, StoreError
from castate.integrations.langgraph import CastateSaver, checkpoint_ref, parse_ref, tip_ref, writes_ref
from tests.memory_objects import MemoryObjects

CAPABILITIES = {"put", "put_writes", "get_tuple", "list", "delete_thread", "delete_for_runs", "copy_thread", "prune"}


# -- LangGraph's own conformance suite --------------------------------------------------------


class SyncThroughAsync(CastateSaver):
    """Routes the async API (all the suite calls) through the sync methods, to check those too."""

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: Any, **kw: Any) -> AsyncIterator[CheckpointTuple]:
        for item in await asyncio.to_thread(lambda: list(self.list(config, **kw))):
            yield item

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


async def run_conformance(factory: Any) -> None:
    @checkpointer_test(name="castate")
    async def registered() -> AsyncIterator[CastateSaver]:
        saver = factory()
        yield saver
        await saver.aclose()

    report = await validate(registered, progress=ProgressCallbacks.quiet())
    results = report.to_dict()
    assert {cap for cap, r in report.results.items() if r.detected} == CAPABILITIES, results
    assert all(r.tests_failed == 0 and r.tests_passed > 0 for r in report.results.values()), results
    assert report.passed_all(), results
    assert report.conformance_level() == "FULL", results


async def test_conformance_on_memory_backend() -> None:
    await run_conformance(lambda: CastateSaver(castate.MemoryBackend()))


async def test_conformance_on_local_store(tmp_path: Path) -> None:
    await run_conformance(lambda: CastateSaver(tmp_path / "store"))


async def test_conformance_through_the_sync_methods() -> None:
    await run_conformance(lambda: SyncThroughAsync(castate.MemoryBackend()))


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def saver() -> Iterator[CastateSaver]:
    with CastateSaver(CountingBackend()) as s:
        yield s


def cfg(thread: str, ns: str = "", checkpoint_id: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        c["checkpoint_id"] = checkpoint_id
    return {"configurable": c}


class Chat:
    """Puts checkpoints of a growing message list, one message per step, like a chat graph."""

    def __init__(self, saver: CastateSaver, thread: str, ns: str = "") -> None:
        self.saver, self.thread, self.ns = saver, thread, ns
        self.messages: list[Any] = []
        self.config = cfg(thread, ns)
        self.version: str | None = None

    def step(self, text: str | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        n = len(self.messages)
        cls = HumanMessage if n % 2 == 0 else AIMessage
        self.messages = [*self.messages, cls(content=text or f"message {n} " + "lorem ipsum " * 20, id=f"m{n}")]
        self.version = self.saver.get_next_version(self.version, None)
        checkpoint = make_checkpoint({"messages": self.messages, "step": n}, {"messages": self.version, "step": n + 1})
        md: CheckpointMetadata = {"source": "loop", "step": n, "parents": {}, **(metadata or {})}
        self.config = self.saver.put(self.config, checkpoint, md, {"messages": self.version, "step": n + 1})
        return self.config


def make_checkpoint(values: dict[str, Any], versions: ChannelVersions) -> Checkpoint:
    return generate_checkpoint(channel_values=values, channel_versions=versions)


class CountingBackend(MemoryObjects):
    """A memory backend that counts the objects it stores."""

    def __init__(self) -> None:
        super().__init__()
        self.stored = 0

    async def put_objects(self, items: Sequence[tuple[bytes, bytes]], *, stream: str = "") -> int:
        written = await super().put_objects(items, stream=stream)
        self.stored += written
        return written


def objects(saver: CastateSaver) -> int:
    backend = saver._store.repo.backend
    assert isinstance(backend, CountingBackend)
    return backend.stored


def refs(saver: CastateSaver, prefix: str = "langgraph/") -> dict[str, bytes]:
    return saver._run(saver._store.repo.list_refs(prefix))


# -- what is stored, and how it is shared -------------------------------------------------------


def test_ref_names_encode_user_strings() -> None:
    ref = checkpoint_ref("a/b", "ns|x:1", "1f0-ab")
    assert ref == "langgraph/a%2Fb/~ns%7Cx%3A1/1f0-ab"
    assert parse_ref(ref) == (("a/b", "ns|x:1", "1f0-ab"), None)
    assert parse_ref(writes_ref("t", "", "c", "task/1")) == (("t", "", "c"), "task/1")
    assert parse_ref(tip_ref("t", "")) is None  # the working ref is not a checkpoint
    assert parse_ref("sessions/x") is None
    with pytest.raises(InvalidKeyError):
        checkpoint_ref("", "", "c")


def test_odd_thread_ids_and_namespaces_stay_apart(saver: CastateSaver) -> None:
    pairs = [("a", "b"), ("a/b", ""), ("a", ""), ("../x", "p:1|q"), ("thread ü 🚀", "~")]
    for thread, ns in pairs:
        Chat(saver, thread, ns).step(text=f"{thread}|{ns}")
    for thread, ns in pairs:
        got = saver.get_tuple(cfg(thread, ns))
        assert got is not None
        assert got.checkpoint["channel_values"]["messages"][0].content == f"{thread}|{ns}"
        assert [t.config["configurable"]["checkpoint_ns"] for t in saver.list(cfg(thread, ns))] == [ns]
    assert len(list(saver.list(None))) == len(pairs)


def test_checkpoint_tree_holds_one_serialized_item_per_message(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    for _ in range(3):
        config = chat.step()
    tree = saver._run(saver._store.repo.load(checkpoint_ref("t", "", config["configurable"]["checkpoint_id"])))
    assert set(tree) == {"checkpoint", "values"}
    entry = tree["values"]["messages"]
    assert entry["t"] == "msgpack"
    assert entry["items"] == [saver.serde.dumps_typed(m)[1] for m in chat.messages]
    assert saver.serde.loads_typed((tree["values"]["step"]["t"], tree["values"]["step"]["b"])) == 2


def test_appending_a_message_writes_a_bounded_number_of_objects(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    new_per_put = []
    for _ in range(300):
        before = objects(saver)
        chat.step()
        new_per_put.append(objects(saver) - before)
    # The list is cut into runs: a put writes the tail run, a few index nodes, the
    # checkpoint's own nodes and its commit, however long the history is.
    assert max(new_per_put[-50:]) <= max(new_per_put[10:60])
    assert max(new_per_put) <= 10
    got = saver.get_tuple(chat.config)
    assert got is not None
    assert got.checkpoint["channel_values"]["messages"] == chat.messages


def test_threads_share_equal_messages(saver: CastateSaver) -> None:
    first = Chat(saver, "one")
    for _ in range(100):
        first.step()
    before = objects(saver)
    second = Chat(saver, "two")
    for _ in range(100):
        second.step()  # the same messages in another thread
    # Only the checkpoints' own nodes are new; the message runs are shared.
    assert objects(saver) - before < 100 * 6
    one, two = saver.get_tuple(cfg("one")), saver.get_tuple(cfg("two"))
    assert one is not None
    assert two is not None
    assert one.checkpoint["channel_values"]["messages"] == two.checkpoint["channel_values"]["messages"]


def test_copy_thread_adds_refs_not_objects(saver: CastateSaver) -> None:
    chat = Chat(saver, "src")
    for _ in range(20):
        config = chat.step()
    saver.put_writes(config, [("messages", [AIMessage(content="pending", id="p")])], task_id="task-1")
    before = objects(saver)
    saver.copy_thread("src", "dst")
    assert objects(saver) == before
    src, dst = list(saver.list(cfg("src"))), list(saver.list(cfg("dst")))
    assert [t.checkpoint for t in dst] == [t.checkpoint for t in src]
    assert (
        dst[0].pending_writes
        == src[0].pending_writes
        == [("task-1", "messages", [AIMessage(content="pending", id="p")])]
    )
    assert dst[0].config["configurable"]["thread_id"] == "dst"
    assert dst[0].parent_config is not None
    assert dst[0].parent_config["configurable"]["thread_id"] == "dst"
    saver.delete_thread("src")
    assert saver.get_tuple(cfg("src")) is None
    assert [t.checkpoint for t in saver.list(cfg("dst"))] == [t.checkpoint for t in src]


def test_unchanged_channels_reuse_their_serialized_form(saver: CastateSaver) -> None:
    calls: list[Any] = []
    real = saver.serde

    class Counting:
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            calls.append(obj)
            return real.dumps_typed(obj)

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            return real.loads_typed(data)

    saver.serde = Counting()  # type: ignore[assignment]
    big = [f"document {i}" for i in range(50)]
    v1 = {"docs": "1", "n": "1"}
    config = saver.put(cfg("t"), make_checkpoint({"docs": big, "n": 1}, v1), {"step": 0}, v1)
    calls.clear()
    v2 = {"docs": "1", "n": "2"}
    config = saver.put(config, make_checkpoint({"docs": big, "n": 2}, v2), {"step": 1}, {"n": "2"})
    assert not any(isinstance(c, str) and c.startswith("document") for c in calls)  # docs not serialized again
    got = saver.get_tuple(config)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"docs": big, "n": 2}
    # A different object under a known version is serialized again, not taken from the cache.
    other = [f"other {i}" for i in range(3)]
    config = saver.put(config, make_checkpoint({"docs": other, "n": 3}, v2), {"step": 2}, {})
    got = saver.get_tuple(config)
    assert got is not None
    assert got.checkpoint["channel_values"]["docs"] == other


class PickleSerde:
    """A minimal serializer that follows LangGraph's SerializerProtocol."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return "pickle", pickle.dumps(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        assert data[0] == "pickle"
        return pickle.loads(data[1])


def test_a_custom_serializer_is_used_for_every_value() -> None:
    with CastateSaver(castate.MemoryBackend(), serde=PickleSerde()) as saver:
        chat = Chat(saver, "t")
        chat.step()
        config = chat.step(metadata={"note": ("a", 1)})  # a tuple survives: metadata goes through serde too
        saver.put_writes(config, [("out", {1, 2})], task_id="x")
        got = saver.get_tuple(config)
        assert got is not None
        assert got.metadata["note"] == ("a", 1)
        assert got.pending_writes == [("x", "out", {1, 2})]
        assert got.checkpoint["channel_values"]["messages"] == chat.messages
        tree = saver._run(saver._store.repo.load(checkpoint_ref("t", "", config["configurable"]["checkpoint_id"])))
        assert tree["values"]["messages"] == {"t": "pickle", "items": [pickle.dumps(m) for m in chat.messages]}


# -- maintenance ---------------------------------------------------------------------------------


def test_prune_keep_latest_keeps_one_checkpoint_per_namespace_and_the_thread_goes_on(saver: CastateSaver) -> None:
    main, sub, other = Chat(saver, "t"), Chat(saver, "t", "child:1"), Chat(saver, "u")
    for _ in range(5):
        main.step()
        sub.step()
        other.step()
    saver.put_writes(main.config, [("x", 1)], task_id="last")
    old = next(iter(saver.list(cfg("t", ""), limit=2, before=main.config)))
    saver.put_writes(old.config, [("x", 2)], task_id="old")
    saver.prune(["t"])
    kept = list(saver.list({"configurable": {"thread_id": "t"}}))  # every namespace
    assert sorted(
        (t.config["configurable"]["checkpoint_ns"], t.checkpoint["channel_values"]["step"]) for t in kept
    ) == [
        ("", 4),
        ("child:1", 4),
    ]
    assert next(t for t in kept if t.config["configurable"]["checkpoint_ns"] == "").pending_writes == [("last", "x", 1)]
    assert not any("/~old" in name for name in refs(saver))
    assert len(list(saver.list(cfg("u")))) == 5
    main.step()  # the pruned thread takes new checkpoints as before
    latest = saver.get_tuple(cfg("t", ""))
    assert latest is not None
    assert latest.checkpoint["channel_values"]["messages"] == main.messages
    saver.prune(["t", "nope"], strategy="delete")
    assert list(saver.list(cfg("t"))) == []
    assert refs(saver, "langgraph/t/") == {}
    with pytest.raises(ValueError, match="prune strategy"):
        saver.prune(["u"], strategy="keep_some")


def test_delete_for_runs_removes_only_those_runs(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    for i in range(6):
        chat.step(metadata={"run_id": "run-a" if i < 3 else "run-b"})
    saver.delete_for_runs(["run-b"])
    assert [t.metadata["run_id"] for t in saver.list(cfg("t"))] == ["run-a"] * 3
    assert not any(name.endswith("@tip") for name in refs(saver))  # the tip held a run-b checkpoint
    saver.delete_for_runs([])
    assert len(list(saver.list(cfg("t")))) == 3


def test_delete_thread_is_one_atomic_ref_update(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    for _ in range(4):
        config = chat.step()
    saver.put_writes(config, [("a", 1)], task_id="w")
    names = set(refs(saver, "langgraph/t/"))
    saver.delete_thread("t")
    log = saver._run(saver._store.repo.reflog())
    deleted = [e for e in log if e.message == "langgraph delete_thread"]
    assert {e.name for e in deleted} == names
    assert all(e.new is None for e in deleted)
    assert len({e.time_ns for e in deleted}) == 1  # applied together
    assert saver.get_tuple(cfg("t")) is None


# -- writes, listing, lifecycle -------------------------------------------------------------------


def test_put_writes_keeps_regular_writes_and_replaces_special_ones(saver: CastateSaver) -> None:
    config = Chat(saver, "t").step()
    saver.put_writes(config, [("a", 1), ("b", 2)], task_id="task", task_path="~p")
    saver.put_writes(config, [("a", 10)], task_id="task", task_path="~p")  # idx 0 is stored: kept
    saver.put_writes(config, [("__error__", "first")], task_id="task", task_path="~p")
    saver.put_writes(config, [("__error__", "second")], task_id="task", task_path="~p")
    saver.put_writes(config, [("c", 3)], task_id="another", task_path="~a")
    got = saver.get_tuple(config)
    assert got is not None
    # writes_sort_key order: task path, task id, index (special writes have negative ones)
    assert got.pending_writes == [
        ("another", "c", 3),
        ("task", "__error__", "second"),
        ("task", "a", 1),
        ("task", "b", 2),
    ]
    with pytest.raises(InvalidKeyError, match="checkpoint_id"):
        saver.put_writes(cfg("t"), [("a", 1)], task_id="x")


def test_list_is_lazy_and_can_be_abandoned(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    for i in range(70):
        chat.step(metadata={"parity": i % 2})
    it = saver.list(cfg("t"), filter={"parity": 1})
    first = next(it)
    assert first.metadata["step"] == 69
    it.close()
    steps = [t.metadata["step"] for t in saver.list(cfg("t"), filter={"parity": 0}, limit=40)]
    assert steps == list(range(68, -1, -2))
    before = [t.metadata["step"] for t in saver.list(cfg("t"), before=first.config, limit=3)]
    assert before == [68, 67, 66]
    assert list(saver.list(cfg("t"), limit=0)) == []


def test_concurrent_writers_from_threads(saver: CastateSaver) -> None:
    base = Chat(saver, "t").step()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(10):
                saver.put_writes(base, [("ch", [k, i])], task_id=f"task-{k}-{i}")
                Chat(saver, f"thread-{k}").step(text=f"{k}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = saver.get_tuple(base)
    assert got is not None
    assert sorted(w[2] for w in got.pending_writes or []) == sorted([k, i] for k in range(6) for i in range(10))
    assert len(list(saver.list(None))) == 1 + 6 * 10


async def test_async_methods_from_several_tasks() -> None:
    async with CastateSaver(castate.MemoryBackend()) as saver:

        async def one(k: int) -> None:
            config = cfg(f"t{k}")
            for i in range(5):
                v = {"x": str(i + 1)}
                config = await saver.aput(config, make_checkpoint({"x": [k, i]}, v), {"step": i}, v)
                await saver.aput_writes(config, [("x", i)], task_id="w")

        await asyncio.gather(*(one(k) for k in range(8)))
        tuples = [t async for t in saver.alist(None)]
        assert len(tuples) == 40
        latest = await saver.aget_tuple(cfg("t3"))
        assert latest is not None
        assert latest.checkpoint["channel_values"] == {"x": [3, 4]}
        assert latest.pending_writes == [("w", "x", 4)]


def test_a_local_store_survives_reopening(tmp_path: Path) -> None:
    with CastateSaver(tmp_path / "store") as saver:
        chat = Chat(saver, "t")
        for _ in range(10):
            config = chat.step()
        saver.put_writes(config, [("a", 1)], task_id="w")
    with CastateSaver(tmp_path / "store") as saver:
        got = saver.get_tuple(cfg("t"))
        assert got is not None
        assert got.checkpoint["channel_values"]["messages"] == chat.messages
        assert got.pending_writes == [("w", "a", 1)]
        assert len(list(saver.list(cfg("t")))) == 10
        Chat(saver, "t").step()  # a fresh process appends to the same thread


def test_a_closed_saver_refuses_work() -> None:
    saver = CastateSaver(castate.MemoryBackend())
    Chat(saver, "t").step()
    saver.close()
    saver.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        saver.get_tuple(cfg("t"))


def test_castate_core_never_imports_langgraph() -> None:
    code = (
        "import sys, pkgutil, importlib, castate\n"
        "for m in pkgutil.walk_packages(castate.__path__, 'castate.'):\n"
        "    if not m.name.startswith(('castate.integrations.', 'castate.demo')) and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('langgraph', 'langchain_core')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- issue 16: ids, URLs, prune's semantics, the delta-channel walk ------------------------------


def test_prune_and_delete_for_runs_take_a_str_as_one_id(saver: CastateSaver) -> None:
    """They iterated the string: prune("ab") pruned threads "a" and "b" and left "ab"."""
    for thread in ("a", "b", "ab"):
        chat = Chat(saver, thread)
        for _ in range(2):
            chat.step(metadata={"run_id": "rx" if thread == "ab" else "r"})
    saver.prune("ab", strategy="delete")
    assert {t: len(list(saver.list(cfg(t)))) for t in ("a", "b", "ab")} == {"a": 2, "b": 2, "ab": 0}
    saver.delete_for_runs("rx")  # run "rx" (gone with "ab"); before: runs "r" and "x"
    assert {t: len(list(saver.list(cfg(t)))) for t in ("a", "b")} == {"a": 2, "b": 2}
    saver.delete_for_runs("r")
    assert {t: len(list(saver.list(cfg(t)))) for t in ("a", "b")} == {"a": 0, "b": 0}
    with pytest.raises(TypeError, match="thread_ids"):
        saver.prune(5, strategy="delete")  # type: ignore[arg-type]


def test_a_store_url_opens_that_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CastateSaver("sqlite:///state.db") made a local store in a directory named "sqlite:"."""
    monkeypatch.chdir(tmp_path)
    with CastateSaver("sqlite:///state.db") as saver:
        Chat(saver, "t").step()
    assert (tmp_path / "state.db").is_file()
    assert not (tmp_path / "sqlite:").exists()
    with CastateSaver.from_conn_string("sqlite:///state.db") as saver:
        assert len(list(saver.list(cfg("t")))) == 1


async def test_from_conn_string_works_as_an_async_context_manager(tmp_path: Path) -> None:
    async with CastateSaver.from_conn_string(f"sqlite:///{tmp_path / 'state.db'}") as saver:
        assert await saver.aget_tuple(cfg("t")) is None


def test_prune_keeps_writes_saved_before_their_checkpoint(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    for _ in range(3):
        chat.step()
    latest = chat.config["configurable"]["checkpoint_id"]
    early = cfg("t", "", latest[:-1] + chr(ord(latest[-1]) + 1))  # the next checkpoint's id, not put yet
    saver.put_writes(early, [("x", 1)], task_id="ahead")
    saver.prune(["t"])
    checkpoint = make_checkpoint({"step": 9}, {"step": 1})
    checkpoint["id"] = early["configurable"]["checkpoint_id"]
    md: CheckpointMetadata = {"source": "loop", "step": 3, "parents": {}}
    saver.put(cfg("t", "", latest), checkpoint, md, {"step": 1})
    tup = saver.get_tuple(early)
    assert tup is not None
    assert tup.pending_writes == [("ahead", "x", 1)]  # before: deleted by the prune


def test_after_prune_the_kept_checkpoint_names_no_deleted_parent(saver: CastateSaver) -> None:
    chat = Chat(saver, "t")
    for _ in range(3):
        chat.step()
    before = saver.get_tuple(cfg("t"))
    assert before is not None
    assert before.parent_config is not None
    saver.prune(["t"])
    after = saver.get_tuple(cfg("t"))
    assert after is not None
    assert after.parent_config is None  # the parent is gone, as PostgresSaver reports it
    assert [t.parent_config for t in saver.list(cfg("t"))] == [None]


def test_prune_keep_latest_refuses_a_delta_channel_thread_naming_it(saver: CastateSaver) -> None:
    plain, delta = Chat(saver, "plain"), Chat(saver, "delta")
    for _ in range(3):
        plain.step()
        delta.step(metadata={"counters_since_delta_snapshot": {"messages": [2, 2]}})
    with pytest.raises(ValueError, match="'delta' uses DeltaChannel"):
        saver.prune(["plain", "delta"])
    assert (len(list(saver.list(cfg("plain")))), len(list(saver.list(cfg("delta"))))) == (3, 3)  # nothing went
    saver.prune(["delta"], strategy="delete")  # what the message offers
    assert list(saver.list(cfg("delta"))) == []


class CountedReads(CastateSaver):
    """Counts get_tuple calls and stops a walk that would never end."""

    calls = 0

    def get_tuple(self, config: Any) -> CheckpointTuple | None:
        self.calls += 1
        if self.calls > 100:
            raise RuntimeError("the history walk went round in circles")
        return super().get_tuple(config)


async def test_the_delta_channel_history_walk_ends_on_a_parent_cycle() -> None:
    with CountedReads(CountingBackend()) as saver:
        md: CheckpointMetadata = {"source": "loop", "step": 1, "parents": {}}
        a, b = make_checkpoint({"y": 1}, {"y": 1}), make_checkpoint({"y": 2}, {"y": 2})
        a["id"], b["id"] = "1ef00000-0000-6000-8000-00000000000a", "1ef00000-0000-6000-8000-00000000000b"
        saver.put(cfg("t", "", b["id"]), a, md, {"y": 1})  # a's parent is b
        saver.put(cfg("t", "", a["id"]), b, md, {"y": 2})  # and b's parent is a
        saver.put_writes(cfg("t", "", b["id"]), [("x", 1)], task_id="task")
        history = saver.get_delta_channel_history(config=cfg("t", "", a["id"]), channels=["x"])
        assert history == {"x": {"writes": [("task", "x", 1)]}}
        assert await saver.aget_delta_channel_history(config=cfg("t", "", a["id"]), channels=["x"]) == history
        assert saver.get_delta_channel_history(config=cfg("t", "", a["id"]), channels=[]) == {}


class DeleteAndCollectAfterListing(castate.Repository):
    """After its first listing, another process deletes the listed thread and runs gc."""

    def __init__(self, backend: Any, store: Path, outcome: list[str]) -> None:
        super().__init__(backend)
        self.store, self.outcome, self.armed = store, outcome, True

    async def list_refs(self, prefix: str = "") -> dict[str, bytes]:
        found = await super().list_refs(prefix)
        if self.armed:
            self.armed = False
            async with castate.StateManager(castate.LocalBackend(self.store, lock_timeout=1.0)) as other:
                await other.repository.delete_refs(list(await other.repository.list_refs(prefix)))
                try:
                    report = await other.gc(grace=0, reflog_expire=0)
                    self.outcome.append(f"collected {report.deleted}")
                except StoreError:
                    self.outcome.append("gc waited")
        return found


def test_copy_thread_keeps_what_it_copies_when_the_source_goes_during_the_copy(tmp_path: Path) -> None:
    store = tmp_path / "state"
    with CastateSaver(store) as saver:
        chat = Chat(saver, "src")
        for _ in range(3):
            chat.step()
    outcome: list[str] = []
    with CastateSaver(store) as saver:
        saver._store.repo = DeleteAndCollectAfterListing(castate.LocalBackend(store), store, outcome)
        saver.copy_thread("src", "dst")
    with CastateSaver(store) as fresh:  # another process: it reads the files as they are now
        copied = list(fresh.list(cfg("dst")))  # before the fix: MissingObjectError
    assert [t.checkpoint["channel_values"]["step"] for t in copied] == [2, 1, 0]
    assert outcome == ["gc waited"]
