"""A real LangGraph agent checkpointing on castate: hundreds of steps, history, resume and fork.

Every scenario also runs on LangGraph's InMemorySaver, the reference: the states castate
returns must equal the reference's, step by step.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, StateSnapshot, interrupt

from castate.integrations.langgraph import CastateSaver
from tools.bench.langgraph_agent import build, checkpoints_of, final_turn, run_config, start

LIMIT = 150  # model turns: 203 checkpoints in the first run


def summary(history: list[StateSnapshot]) -> list[tuple[Any, ...]]:
    """What must match the reference: step, source, next nodes and values of each checkpoint."""
    return [(s.metadata["step"], s.metadata["source"], s.next, s.values) for s in history]


def scenario(saver: BaseCheckpointSaver[Any]) -> dict[str, Any]:
    """Run the agent, read its history, resume from an old checkpoint, then fork from it."""
    graph = build(saver)
    config = run_config("chat")
    out = graph.invoke(start(LIMIT), config)
    history = list(graph.get_state_history(config))

    old = next(s for s in reversed(history) if s.metadata["step"] >= 160 and s.next == ("agent",))
    replayed = graph.invoke(None, old.config)
    latest_after_replay = graph.get_state(config)

    fork_config = graph.update_state(old.config, {"messages": [HumanMessage(content="change of plan", id="fork")]})
    forked = graph.get_state(fork_config)
    fork_out = graph.invoke(None, fork_config)
    return {
        "graph": graph,
        "out": out,
        "history": history,
        "old": old,
        "replayed": replayed,
        "latest_after_replay": latest_after_replay,
        "forked": forked,
        "fork_out": fork_out,
        "final": list(graph.get_state_history(config)),
    }


def test_long_run_history_resume_and_fork(tmp_path: Path) -> None:
    reference = scenario(InMemorySaver())
    with CastateSaver(tmp_path / "store") as saver:
        got = scenario(saver)
        graph, out, history, old = got["graph"], got["out"], got["history"], got["old"]

        # The long run: every step checkpointed, newest first, each the child of the next.
        turns = final_turn(LIMIT)
        assert out["turns"] == turns
        assert len(out["messages"]) == 1 + turns + turns // 3
        assert len(history) == checkpoints_of(LIMIT)
        assert [s.metadata["step"] for s in history] == list(range(len(history) - 2, -2, -1))
        for newer, older in itertools.pairwise(history):
            assert newer.parent_config is not None
            assert newer.parent_config["configurable"]["checkpoint_id"] == older.config["configurable"]["checkpoint_id"]
        for s in history:
            messages = s.values.get("messages", [])
            assert messages == out["messages"][: len(messages)]
        assert summary(history) == summary(reference["history"])

        # Resuming from an old checkpoint replays the same (deterministic) run on a new branch.
        assert got["replayed"] == out
        replay_head = got["latest_after_replay"]
        assert replay_head.config["configurable"]["checkpoint_id"] > history[0].config["configurable"]["checkpoint_id"]
        assert replay_head.values == history[0].values
        assert graph.get_state(history[0].config).values == history[0].values  # the first branch is intact

        # Forking: a new checkpoint whose parent is the old one, then a different future.
        forked = got["forked"]
        assert forked.metadata["source"] == "update"
        assert forked.parent_config is not None
        assert forked.parent_config["configurable"]["checkpoint_id"] == old.config["configurable"]["checkpoint_id"]
        prefix = old.values["messages"]
        fork_messages = got["fork_out"]["messages"]
        assert fork_messages[: len(prefix)] == prefix
        assert fork_messages[len(prefix)].content == "change of plan"
        assert got["fork_out"]["turns"] == turns
        assert fork_messages != out["messages"]
        assert summary(got["final"]) == summary(reference["final"])
        assert graph.get_state(history[0].config).values["messages"] == out["messages"]


async def test_async_graph_matches_the_reference(tmp_path: Path) -> None:
    async def run(saver: BaseCheckpointSaver[Any]) -> list[tuple[Any, ...]]:
        graph = build(saver)
        config = run_config("async-chat")
        await graph.ainvoke(start(30), config)
        history = [s async for s in graph.aget_state_history(config)]
        old = next(s for s in reversed(history) if s.metadata["step"] >= 10 and s.next == ("agent",))
        fork = await graph.aupdate_state(old.config, {"messages": [HumanMessage(content="other", id="other")]})
        await graph.ainvoke(None, fork)
        return summary([s async for s in graph.aget_state_history(config)])

    async with CastateSaver(tmp_path / "store") as saver:
        got = await run(saver)
    assert len(got) > checkpoints_of(30)
    assert got == await run(InMemorySaver())


def test_an_interrupted_run_resumes_from_the_store(tmp_path: Path) -> None:
    """Human in the loop: the interrupt is a pending write; a new saver on the same store resumes."""

    class Review(TypedDict):
        draft: str
        verdict: str

    def write(state: Review) -> dict[str, Any]:
        return {"draft": "a draft"}

    def review(state: Review) -> dict[str, Any]:
        return {"verdict": interrupt({"question": "approve?", "draft": state["draft"]})}

    def builder() -> StateGraph[Any]:
        g = StateGraph(Review)
        g.add_node("write", write)
        g.add_node("review", review)
        g.add_edge(START, "write")
        g.add_edge("write", "review")
        g.add_edge("review", END)
        return g

    config = {"configurable": {"thread_id": "review-1"}}
    with CastateSaver(tmp_path / "store") as saver:
        first = builder().compile(checkpointer=saver).invoke({"draft": "", "verdict": ""}, config)
        assert first["__interrupt__"][0].value == {"question": "approve?", "draft": "a draft"}
    with CastateSaver(tmp_path / "store") as saver:  # a new process, say
        graph = builder().compile(checkpointer=saver)
        pending = graph.get_state(config)
        assert pending.next == ("review",)
        assert pending.tasks[0].interrupts[0].value["question"] == "approve?"
        done = graph.invoke(Command(resume="approved"), config)
        assert done == {"draft": "a draft", "verdict": "approved"}
        assert graph.get_state(config).next == ()
