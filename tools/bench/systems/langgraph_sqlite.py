"""LangGraph's SqliteSaver (langgraph-checkpoint-sqlite), driven directly as a graph would.

The workload state is split into channels (messages, agents, tool_cache, and the rest);
a channel's version is bumped only when its content changed, exactly as LangGraph's Pregel
loop reports ``new_versions``. SqliteSaver stores each checkpoint with all its channel
values in one row (WAL mode, its default ``synchronous`` setting).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tools.bench.systems.base import System

THREAD = "bench"
CHANNELS = ("messages", "agents", "tool_cache")


class LangGraphSqlite(System):
    name = "langgraph-sqlite"
    durable = False  # WAL with SQLite's default synchronous=NORMAL: a power loss may lose the last commits

    def __init__(self) -> None:
        super().__init__()
        self.saver: Any = None
        self.conn: sqlite3.Connection | None = None
        self.versions: dict[str, str] = {}
        self.last: dict[str, bytes] = {}
        self.config: dict[str, Any] = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}

    async def setup(self, directory: Path) -> None:
        await super().setup(directory)
        from langgraph.checkpoint.sqlite import SqliteSaver

        directory.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(directory / "checkpoints.sqlite", check_same_thread=False)
        self.saver = SqliteSaver(self.conn)

    def _channels(self, state: dict[str, Any]) -> dict[str, Any]:
        values = {c: state[c] for c in CHANNELS}
        values["rest"] = {k: v for k, v in state.items() if k not in CHANNELS}
        return values

    async def checkpoint(self, state: dict[str, Any], step: int) -> str:
        from langgraph.checkpoint.base import Checkpoint
        from langgraph.checkpoint.base.id import uuid6

        values = self._channels(state)
        new_versions = {}
        for channel, value in values.items():
            encoded = orjson.dumps(value)
            if self.last.get(channel) != encoded:
                self.last[channel] = encoded
                self.versions[channel] = self.saver.get_next_version(self.versions.get(channel), None)
                new_versions[channel] = self.versions[channel]
        checkpoint = Checkpoint(
            v=1,
            id=str(uuid6(clock_seq=step)),
            ts=datetime.now(UTC).isoformat(),
            channel_values=values,
            channel_versions=dict(self.versions),
            versions_seen={},
            updated_channels=sorted(new_versions),
        )
        self.config = self.saver.put(self.config, checkpoint, {"source": "loop", "step": step}, new_versions)
        return self.config["configurable"]["checkpoint_id"]

    async def restore(self, handle: str) -> dict[str, Any]:
        config = {"configurable": {"thread_id": THREAD, "checkpoint_ns": "", "checkpoint_id": handle}}
        values = self.saver.get_tuple(config).checkpoint["channel_values"]
        state = dict(values["rest"])
        for channel in CHANNELS:
            state[channel] = values[channel]
        return state

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()
            self.conn = None
