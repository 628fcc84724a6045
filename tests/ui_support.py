"""For the tests of castate ui: the store the browser tests look at, built the same way every
time (a fixed clock and fixed checkpoint suffixes, so the screenshots in docs/img/ change only
when the page does), and `castate ui` run in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import castate

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


@contextlib.contextmanager
def fixed_clock(step_s: float = 37.0) -> Iterator[None]:
    """time.time and time.time_ns advance by ``step_s`` per call from START; the random
    suffix of checkpoint ids counts up."""
    now = [int(START.timestamp() * 1e9)]
    counter = itertools.count(1)

    def time_ns() -> int:
        now[0] += int(step_s * 1e9)
        return now[0]

    def time_s() -> float:
        return time_ns() / 1e9

    def urandom(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    with (
        mock.patch("time.time_ns", time_ns),
        mock.patch("time.time", time_s),
        mock.patch("castate.repository.refs.os.urandom", urandom),
    ):
        yield


def tool_message(step: int) -> dict[str, Any]:
    return {"role": "tool", "content": f"search results for step {step}: " + "lorem ipsum dolor " * (3 + step % 5)}


async def _build(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"saves": {}, "checkpoints": {}}
    async with castate.StateManager(castate.FileStorageBackend(path)) as sm:
        messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful research agent. " * 20}]
        for step in range(12):
            messages.append({"role": "assistant", "content": f"step {step}: I will call the search tool."})
            if step % 2:
                messages.append(tool_message(step))
            state = {
                "task": "market analysis 2024 Q1",
                "step": step,
                "status": "running" if step < 11 else "done",
                "messages": list(messages),
                "scratchpad": "notes " * (40 * step),
            }
            await sm.save_session("research-42", state)
            if step in (4, 8):
                cp = await sm.create_checkpoint("research-42", "before_tool_call")
                info["checkpoints"][step] = cp
                info["messages_at"] = {**info.get("messages_at", {}), step: len(messages)}
        info["saves"]["research-42"] = 12
        info["last_messages"] = messages
        await sm.fsck(record=True)  # the health page shows how the store grew between these runs

        await sm.fork(info["checkpoints"][8], "research-42-retry")
        for step in range(9, 12):
            messages_retry = [*messages[:14], {"role": "assistant", "content": f"retry {step}: a different plan"}]
            await sm.save_session(
                "research-42-retry", {"task": "market analysis 2024 Q1", "step": step, "messages": messages_retry}
            )
        info["saves"]["research-42-retry"] = 9 + 3  # the saves up to the checkpoint are its history too
        await sm.gc(record=True)

        rows = [
            {"id": i, "region": ["north", "south", "east", "west"][i % 4], "value": i * 7 % 1000} for i in range(3000)
        ]
        report = "".join(f"{i:06d} daily figures for the nightly report, all regions\n" for i in range(8_000))
        for night in range(5):
            await sm.save_session("nightly-etl", {"night": night, "rows": rows[: 600 * (night + 1)], "report": report})
        info["saves"]["nightly-etl"] = 5
        info["report_bytes"] = len(report)

        await sm.fsck(full=True, record=True)
    return info


def build(path: Path) -> dict[str, Any]:
    with fixed_clock():
        return asyncio.run(_build(path))


class Server:
    """`castate ui` on a free loopback port, in a subprocess."""

    def __init__(self, store: Path, *extra: str) -> None:
        # Run from the store's parent, so the page names the store "state" and screenshots do not
        # change with the temporary directory.
        argv = [sys.executable, "-m", "castate.cli", "--store", store.name, "ui", "--port", "0", *extra]
        # The size cache goes next to the test's store, never into the user's cache directory.
        env = {**os.environ, "CASTATE_UI_CACHE": str(store.parent / "ui-cache")}
        self.proc = subprocess.Popen(
            argv, cwd=store.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "http://" not in line:
            self.proc.kill()
            raise AssertionError(f"castate ui did not start: {line!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        self.url = line.split(" at ", 1)[1].split(" ", 1)[0]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
