"""Chat messages in a list, summed up for the tree view: role, agent, a preview of the
content, the tool calls made and the call a tool result answers, so a conversation reads as
one without opening every item (the raw items stay one click away)."""

from __future__ import annotations

import asyncio
from typing import Any

from castate.repository import browse
from castate.repository.tree import Loader, dict_of, entry_at

MESSAGE_FIELDS = ("role", "type", "name", "content", "tool_call_id", "tool_calls")
MESSAGE_PREVIEW = 160  # characters of a message's content shown in a list
MAX_CALLS = 32  # tool calls of one message read whole to name them


async def summaries(loader: Loader, root: bytes, parts: list[str], node: browse.Level) -> dict[int, dict[str, Any]]:
    """For the dicts of a list page that look like chat messages (a ``role`` or ``type``
    key): role, name, a preview of the content, tool call ids and names, the id of the
    call a tool result answers. Reads one object per message and per field shown, in
    batches, plus the (small) tool call lists whole."""
    at = [k for k, i in enumerate(node.items) if i.kind == "dict"]
    if not at:
        return {}
    entry = await entry_at(loader, root, parts)
    stop = node.offset + len(node.items)
    chosen = (
        entry[node.offset : stop]
        if type(entry) is list
        else await browse.list_range(loader, entry.id, node.offset, stop)
    )
    dicts = await asyncio.gather(*(_children(loader, chosen[k]) for k in at))
    pairs: list[tuple[tuple[int, str], Any]] = []
    for k, children in zip(at, dicts, strict=True):
        if "role" in children or "type" in children:
            pairs.extend(((k, f), children[f]) for f in MESSAGE_FIELDS if f in children)
    described = await browse.describe(loader, [(None, e) for _, e in pairs], MESSAGE_PREVIEW)
    out: dict[int, dict[str, Any]] = {}
    calls: list[tuple[int, Any]] = []
    for ((k, f), e), item in zip(pairs, described, strict=True):
        row = out.setdefault(k, {})
        if f == "tool_calls":
            row["tool_calls"] = item.size or 0
            if item.kind == "list" and (item.size or 0) <= MAX_CALLS:
                calls.append((k, e))
        elif item.kind == "str":
            row[f] = item.value
            if f == "content":
                row["content_size"] = item.size  # UTF-8 bytes
        elif f == "content":
            row["content_kind"] = f"{item.kind} · {item.size} " + ("items" if item.kind == "list" else "keys")
    if calls:
        for (k, _), value in zip(calls, await loader.values([e for _, e in calls]), strict=True):
            out[k]["calls"] = [
                {"id": c.get("id"), "name": c.get("name") or (c.get("function") or {}).get("name")}
                for c in value
                if isinstance(c, dict)
            ]
    return out


async def _children(loader: Loader, entry: Any) -> dict[str, Any]:
    return entry if type(entry) is dict else await dict_of(loader, entry.id)


__all__ = ["summaries"]
