"""A small LangGraph agent for the tests and the benchmark: add_messages, a fake model and tool.

The agent node answers each turn with an AIMessage of ``words`` words drawn from
``random.Random(turn)`` (deterministic, no network); every third turn it calls the
``lookup`` tool, whose node answers with a ToolMessage three times as long. The graph
loops agent -> (tool ->) agent until ``turns`` reaches ``limit``; LangGraph takes one
checkpoint per node step (``checkpoints_of`` counts them).
"""

from __future__ import annotations

import random
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph


def _word_bank(size: int = 2000) -> tuple[list[str], list[float]]:
    """Pseudo-words with Zipf weights: text that compresses about like prose, not like a 14-word loop."""
    rng = random.Random(12345)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(size)]
    cum, total = [], 0.0
    for rank in range(size):
        total += 1.0 / (rank + 1)
        cum.append(total)
    return words, cum


WORDS, CUM_WEIGHTS = _word_bank()


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turns: int
    limit: int
    words: int


def _text(seed: int, words: int) -> str:
    return " ".join(random.Random(seed).choices(WORDS, cum_weights=CUM_WEIGHTS, k=words))


def agent(state: State) -> dict[str, Any]:
    n = state.get("turns", 0) + 1
    text = f"turn {n}: " + _text(n, state["words"])
    if n % 3 == 0:
        call = {"name": "lookup", "args": {"query": f"q{n}"}, "id": f"call-{n}"}
        msg = AIMessage(content=text, id=f"ai-{n}", tool_calls=[call])
    else:
        msg = AIMessage(content=text, id=f"ai-{n}")
    return {"messages": [msg], "turns": n}


def tool(state: State) -> dict[str, Any]:
    call = state["messages"][-1].tool_calls[0]
    content = f"result for {call['args']['query']}: " + _text(10_000 + state["turns"], 3 * state["words"])
    return {"messages": [ToolMessage(content=content, tool_call_id=call["id"], id=f"tool-{state['turns']}")]}


def route(state: State) -> str:
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "tool"
    return END if state["turns"] >= state["limit"] else "agent"


def build(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    g = StateGraph(State)
    g.add_node("agent", agent)
    g.add_node("tool", tool)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tool", "agent", END])
    g.add_edge("tool", "agent")
    return g.compile(checkpointer=checkpointer)


def start(limit: int, text: str = "hello", words: int = 30) -> dict[str, Any]:
    """Input of a run of ``limit`` model turns."""
    return {"messages": [HumanMessage(content=text, id="human-0")], "turns": 0, "limit": limit, "words": words}


def final_turn(limit: int) -> int:
    """The last turn of a run: a turn that calls the tool is followed by one more."""
    return limit + 1 if limit % 3 == 0 else limit


def checkpoints_of(limit: int) -> int:
    """Checkpoints of one run: the input, the __start__ step, and one per agent or tool step."""
    turns = final_turn(limit)
    return 2 + turns + turns // 3


def run_config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": 10_000}
