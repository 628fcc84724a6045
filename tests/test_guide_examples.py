"""docs/guide.md's Python examples run, in order, as one reader would type them into one
session: a wrong name, argument or result in the guide fails here.

The examples are fragments (a snippet with ``await`` at the top level runs on one event
loop, as in ``python -m asyncio``); what they assume exists is defined once below: a
``state``, a ``result``, and an external API call. A snippet that uses ``await`` gets an
async ``StateManager`` as ``sm`` when the one before left a ``SyncStateManager`` there.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import pytest

import castate

GUIDE = Path(__file__).parent.parent / "docs" / "guide.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)


def test_the_guide_has_examples() -> None:
    assert len(examples()) >= 10


def test_the_guides_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pydantic")  # the registration example uses a pydantic model
    monkeypatch.chdir(tmp_path)

    async def call_external_api(state: object) -> dict[str, str]:
        return {"answer": "42"}

    ns: dict[str, object] = {
        "__name__": "guide",
        "castate": castate,
        "state": {"task": "Quarterly market analysis", "messages": [], "step": 0},
        "result": {"tool": "search", "hits": 3},
        "call_external_api": call_external_api,
    }
    loop = asyncio.new_event_loop()
    managers: list[castate.StateManager] = []
    try:
        for i, code in enumerate(examples()):
            compiled = compile(code, f"docs/guide.md example {i + 1}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if compiled.co_flags & inspect.CO_COROUTINE:
                if not isinstance(ns.get("sm"), castate.StateManager):
                    ns["sm"] = castate.StateManager("./state")
                loop.run_until_complete(eval(compiled, ns))
            else:
                exec(compiled, ns)
            sm = ns.get("sm")
            if isinstance(sm, castate.StateManager) and sm not in managers:
                managers.append(sm)
    finally:
        for sm in managers:
            loop.run_until_complete(sm.close())
        loop.close()
    # what the examples did is in the store
    with castate.SyncStateManager("./state") as sm:
        sessions = {s.session_id for s in sm.list_sessions()}
        assert {"market_analysis_2024_q1", "market_analysis_retry", "shared-run"} <= sessions
        assert [c.name for c in sm.list_checkpoints("shared-run")] == ["before_tool_call"]
        assert sm.restore_checkpoint("shared-run@before_tool_call") == sm.load_session("shared-run")
        assert sm.history("market_analysis_2024_q1", limit=200)[-1].parent is None
