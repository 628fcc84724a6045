"""castate ui on a long agent run: a generated store whose main session has 10,000 saves
(multi-agent messages with tool calls, a growing report, a small image as bytes, checkpoints,
a fork and a restore), and the time of each JSON endpoint the pages call, through the app
itself (ASGI, no network), on a fresh server (cold) and again (warm).

The browser side (the timeline drawn, the step list, a far diff) is timed by
``tests/test_ui_long.py``, which builds the same store once and prints its numbers.

    python -m tools.bench.ui_long --saves 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import castate

NODES = ("planner", "researcher", "coder", "critic")
# The smallest valid PNG (1x1, grey): bytes the tree can preview as an image.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63680000008200816d6b5a4f0000000049454e44ae426082"
)


def message(step: int, node: str) -> list[dict[str, Any]]:
    """What one step adds to the conversation: a thought, sometimes a tool call and its result."""
    if step % 10 == 3:
        call = f"call_{step}"
        return [
            {
                "role": "assistant",
                "name": node,
                "content": "",
                "tool_calls": [{"id": call, "name": "search", "args": {"q": f"topic {step}"}}],
            },
            {"role": "tool", "tool_call_id": call, "content": f"results for topic {step}: " + "lorem ipsum " * 4},
        ]
    return [{"role": "assistant", "name": node, "content": f"step {step}: {node} works on part {step % 37}"}]


async def build_long(path: Path, saves: int = 10_000) -> dict[str, Any]:
    """The store: session ``long-run`` with ``saves`` saves whose metadata is
    ``{"step": i, "node": ...}`` (a message every 5 steps, a tool call every 50, a report line
    every 25), a checkpoint every 1,000 steps, a fork ``long-run-fork`` at step 5,000 with 20
    saves of its own, a restore of ``long-run`` to its second-last save, and a few small
    sessions. Saves go through ``StateManager.save_session`` like any caller's."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {"saves": saves, "checkpoints": {}}
    async with castate.StateManager(castate.FileStorageBackend(path, durability="relaxed")) as sm:
        messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a team of research agents."}]
        report = "# Report\n"
        for step in range(saves):
            node = NODES[step % len(NODES)]
            if step % 5 == 3:
                messages.extend(message(step, node))
            if step % 25 == 0:
                report += f"- step {step}: {node} found fact {step // 25}\n"
            state = {
                "step": step,
                "node": node,
                "messages": messages,
                "report": report,
                "memory": {"last_node": node, "facts": step // 25},
                "figure": PNG,
            }
            await sm.save_session("long-run", state, metadata={"step": step, "node": node})
            if step % 1000 == 999:
                info["checkpoints"][step] = await sm.create_checkpoint("long-run", f"step-{step}")
            if step == saves // 2:
                info["fork_at"] = step
        half = (await sm.repository.log("sessions/long-run"))[saves - 1 - saves // 2][0]
        await sm.fork(half.hex(), "long-run-fork")
        for k in range(20):
            await sm.save_session("long-run-fork", {"step": k, "messages": messages[:50], "note": f"retry {k}"})
        log = await sm.repository.log("sessions/long-run")
        info["restored_to"] = log[1][0].hex()
        info["dropped_head"] = log[0][0].hex()
        await sm.reset_session("long-run", to=log[1][0].hex())
        for i in range(8):
            await sm.save_session(f"small-{i}", {"i": i, "text": "small session " * i})
        info["messages"] = len(messages)
        info["report_chars"] = len(report)
    info["build_s"] = round(time.perf_counter() - t0, 2)
    return info


async def measure(path: Path) -> dict[str, Any]:
    """Seconds per endpoint call on a fresh app over the store at ``path``: first call, then again."""
    import httpx

    from castate.ui.app import create_app
    from castate.ui.explorer import Explorer

    out: dict[str, Any] = {}
    async with castate.StateManager(castate.FileStorageBackend(path)) as sm:
        explorer = Explorer(sm)
        app = create_app(explorer)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            log = await sm.repository.log("sessions/long-run")
            first, last = log[-16][0].hex(), log[0][0].hex()
            calls = {
                "sessions": ("/api/sessions", {}),
                "health": ("/api/health", {}),
                "timeline": ("/api/timeline", {"session": "long-run"}),
                "far_diff": ("/api/diff", {"a": first, "b": last}),
                "tree_root": ("/api/tree", {"rev": "long-run"}),
                "tree_messages": ("/api/tree", {"rev": "long-run", "path": "/messages"}),
            }
            for name, (url, params) in calls.items():
                times = []
                size = 0
                for _ in range(2):
                    t = time.perf_counter()
                    r = await c.get(url, params=params)
                    times.append(round(time.perf_counter() - t, 4))
                    assert r.status_code == 200, (url, r.status_code, r.text[:300])
                    size = len(r.content)
                out[name] = {"first_s": times[0], "again_s": times[1], "response_bytes": size}
            # The sizes of long histories are measured in the background after the first call.
            t = time.perf_counter()
            await explorer.settle()
            out["background_growth_s"] = round(time.perf_counter() - t, 4)
            for name in ("sessions", "timeline"):
                url, params = calls[name]
                t = time.perf_counter()
                r = await c.get(url, params=params)
                out[name]["after_background_s"] = round(time.perf_counter() - t, 4)
                out[name]["response_bytes"] = len(r.content)
                t = time.perf_counter()
                await c.get(url, params=params)  # nothing moved: what a page drawn again costs
                out[name]["warm_s"] = round(time.perf_counter() - t, 4)
            await explorer.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--saves", type=int, default=10_000)
    p.add_argument("--dir", default=None)
    p.add_argument("--store", default=None, help="measure an existing store built by this script instead")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="castate-ui-long-", dir=args.dir))
    try:
        report: dict[str, Any] = {}
        store = Path(args.store) if args.store else root / "store"
        if not args.store:
            report["build"] = asyncio.run(build_long(store, args.saves))
        report["api"] = asyncio.run(measure(store))
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
