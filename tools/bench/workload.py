"""A seeded, deterministic agent-session workload.

The state has the shape of a multi-agent session as frameworks keep it::

    {
      "session":    {"id", "user", "model", "created_at", "updated_at", "counters": {...}, ...},
      "messages":   [...],            # the global transcript
      "agents":     {"planner": {"role", "turns", "memory": [...]}, "coder": ..., "researcher": ..., "critic": ...},
      "scratchpad": str,              # 300-800 chars, rewritten every step
      "step":       int,
      "status":     str,
      "tool_cache": {url: {"msg_id", "bytes", "fetched_at", "hits"}},
    }

Each step one agent acts: it appends 1 or 2 messages (0.3-2 KB of word-like text) to the
global list and the *same dict objects* to its own memory (aliasing, as real frameworks
do, so they serialize twice). About 20% of steps call a tool: the last message gets a
``tool_calls`` list and a ``tool`` message carrying the 5-80 KB result is appended to the
global transcript. About 1 in 4 tool results re-fetches an earlier URL and gets a
byte-identical result (a new ``str`` object with the same bytes). The small fields (step,
status, updated_at, counters) change every step and the scratchpad is rewritten.

``Workload.step()`` mutates ``state`` in place and returns the step's NEW content: the new
messages (a byte-identical re-fetch appears as the message with ``content`` replaced by a
reference to the earlier message), the changed small fields, the tool-cache entry and the
new scratchpad. ``tools.bench.ideal`` compresses exactly these pieces.

Only ``random.Random(seed)`` is used, so a seed and a step count give the same states in
every process. ``python -m tools.bench.workload --steps 1000`` prints the calibration.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import time
from typing import Any

import orjson

AGENTS = ("planner", "coder", "researcher", "critic")
AGENT_WEIGHTS = (2, 4, 3, 2)
ROLES = {
    "planner": "Breaks the task into steps and assigns them.",
    "coder": "Writes and edits code for the assigned steps.",
    "researcher": "Searches the web and reads documents.",
    "critic": "Reviews results and asks for fixes.",
}
STATUSES = ("planning", "coding", "researching", "reviewing", "waiting_for_tool", "running")
TOOLS = ("web_fetch", "web_search", "read_file", "run_tests")

# Calibration knobs (see ``calibrate``): sizes in bytes of text, before ``msg_scale``.
MSG_MIN, MSG_MAX = 300, 2000  # chat message content
TOOL_MIN, TOOL_MODE, TOOL_MAX = 5_000, 20_000, 80_000  # tool result, triangular distribution
TOOL_PROB = 0.20  # share of steps that call a tool
REFETCH_PROB = 0.25  # share of tool results that re-fetch an earlier URL byte-identically
SECOND_MSG_PROB = 0.5  # share of steps that append two messages instead of one
SCRATCH_MIN, SCRATCH_MAX = 300, 800

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z: the synthetic clock starts here


PHRASES = 4000  # size of the phrase bank; text is drawn from it, so it repeats like prose
PHRASE_ZIPF = 1.0  # phrase frequency ~ 1 / rank ** PHRASE_ZIPF


def _phrase_bank() -> tuple[list[str], list[float]]:
    """A fixed bank of word-like phrases with Zipf weights (cumulative), the same for every seed.

    Drawing phrases (not single words) gives text the repeated n-grams that make prose
    compress about 3x with zstd level 3.
    """
    rng = random.Random(0x5EED)
    onsets = ["", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl", "ch"]
    vowels = ["a", "e", "i", "o", "u", "ea", "io", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck"]
    words = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by"]
    words += ["this", "are", "from", "at", "or", "an", "not"]
    seen = set(words)
    while len(words) < 6000:
        w = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(1, 3)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    word_cum = list(itertools.accumulate(1.0 / (rank + 1) ** 0.9 for rank in range(len(words))))
    phrases = [
        " ".join(words[bisect.bisect(word_cum, rng.random() * word_cum[-1])] for _ in range(rng.randint(1, 5)))
        for _ in range(PHRASES)
    ]
    return phrases, list(itertools.accumulate(1.0 / (rank + 1) ** PHRASE_ZIPF for rank in range(PHRASES)))


_PHRASES, _CUM = _phrase_bank()
_ENDS = (". ", ". ", ". ", "? ", ".\n\n")


def prose(rng: random.Random, nbytes: int) -> str:
    """About ``nbytes`` of word-like text: sentences of phrases, some commas, numbers, paragraphs."""
    out: list[str] = []
    size = 0
    total = _CUM[-1]
    while size < nbytes:
        parts = [_PHRASES[bisect.bisect(_CUM, rng.random() * total)] for _ in range(rng.randint(2, 6))]
        if rng.random() < 0.3:
            parts[rng.randrange(len(parts))] += ","
        if rng.random() < 0.1:
            parts.append(str(rng.randint(0, 9999)))
        sentence = " ".join(parts)
        sentence = sentence[:1].upper() + sentence[1:] + rng.choice(_ENDS)
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:nbytes]


class Workload:
    """The live state of one agent session and the steps that grow it."""

    def __init__(self, seed: int, steps: int, msg_scale: float = 1.0, window: int | None = None) -> None:
        if steps < 1 or msg_scale <= 0 or (window is not None and window < 1):
            raise ValueError("steps must be >= 1, msg_scale > 0 and window (if given) >= 1")
        self.seed = seed
        self.steps = steps
        self.msg_scale = msg_scale
        # A bounded context, as agents keep one: after each step the transcript and every
        # agent's memory keep only their last ``window`` entries (None: they grow for ever).
        self.window = window
        self.rng = random.Random(seed)
        self.n = 0
        self.clock = T0
        self._fetched: list[tuple[str, str, str]] = []  # (url, first message id, content)
        rng = self.rng
        session_id = f"sess-{rng.getrandbits(48):012x}"
        system = self._message("system", "planner", prose(rng, 600))
        self.state: dict[str, Any] = {
            "session": {
                "id": session_id,
                "user": f"user-{rng.randint(1000, 9999)}",
                "model": "gpt-4.1-mini",
                "created_at": self.clock,
                "updated_at": self.clock,
                "task": prose(rng, 240),
                "counters": {"messages": 1, "tool_calls": 0, "tokens_in": 0, "tokens_out": 0},
                "tags": ["bench", "multi-agent"],
            },
            "messages": [system],
            "agents": {
                name: {"role": ROLES[name], "turns": 0, "memory": [system] if name == "planner" else []}
                for name in AGENTS
            },
            "scratchpad": prose(rng, rng.randint(SCRATCH_MIN, SCRATCH_MAX)),
            "step": 0,
            "status": "planning",
            "tool_cache": {},
        }

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(64):016x}"

    def _message(self, role: str, agent: str, content: str) -> dict[str, Any]:
        self.clock += self.rng.uniform(0.5, 30.0)
        return {"id": self._id("msg"), "role": role, "agent": agent, "ts": self.clock, "content": content}

    def _size(self, lo: int, hi: int, mode: int | None = None) -> int:
        n = self.rng.uniform(lo, hi) if mode is None else self.rng.triangular(lo, hi, mode)
        return max(16, int(n * self.msg_scale))

    def step(self) -> list[Any]:
        """Advance one step, mutating ``state`` in place; return the step's new content pieces."""
        if self.n >= self.steps:
            raise RuntimeError(f"the workload has {self.steps} steps")
        rng = self.rng
        state = self.state
        self.n += 1
        agent = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
        memory = state["agents"][agent]["memory"]
        counters = state["session"]["counters"]
        pieces: list[Any] = []

        new = []
        for i in range(2 if rng.random() < SECOND_MSG_PROB else 1):
            role = "user" if i == 0 and rng.random() < 0.3 else "assistant"
            msg = self._message(role, agent, prose(rng, self._size(MSG_MIN, MSG_MAX)))
            msg["tokens"] = len(msg["content"]) // 4
            new.append(msg)

        tool_msg = tool_piece = cache_piece = None
        if rng.random() < TOOL_PROB:
            name = rng.choice(TOOLS)
            if self._fetched and rng.random() < REFETCH_PROB:
                url, first_id, content = rng.choice(self._fetched)
                content = (content + ".")[:-1]  # byte-identical, but a new str object (a fresh fetch)
            else:
                url = f"https://example.org/{name}/{rng.getrandbits(40):010x}"
                content = prose(rng, self._size(TOOL_MIN, TOOL_MAX, TOOL_MODE))
                first_id = ""
            call_id = self._id("call")
            new[-1]["tool_calls"] = [{"id": call_id, "name": name, "arguments": {"url": url, "timeout": 30}}]
            tool_msg = self._message("tool", agent, content)
            tool_msg["tool_call_id"] = call_id
            if not first_id:
                self._fetched.append((url, tool_msg["id"], content))
            entry = state["tool_cache"].get(url)
            if entry is None:
                entry = {"msg_id": tool_msg["id"], "bytes": len(content), "fetched_at": self.clock, "hits": 0}
                state["tool_cache"][url] = entry
            else:
                entry["hits"] += 1
                entry["fetched_at"] = self.clock
            counters["tool_calls"] += 1
            cache_piece = {"tool_cache": {url: dict(entry)}}
            # a byte-identical re-fetch is new only as a reference to the first fetch
            tool_piece = dict(tool_msg, content={"same_as": first_id}) if first_id else tool_msg

        for msg in new:
            state["messages"].append(msg)
            memory.append(state["messages"][-1])  # the same dict object: aliasing
            pieces.append(msg)
            counters["tokens_out" if msg["role"] == "assistant" else "tokens_in"] += msg["tokens"]
        counters["messages"] += len(new)
        if tool_msg is not None:
            state["messages"].append(tool_msg)
            counters["messages"] += 1
            counters["tokens_in"] += len(tool_msg["content"]) // 4
            pieces.append(tool_piece)
            pieces.append(cache_piece)

        state["agents"][agent]["turns"] += 1
        state["step"] = self.n
        state["status"] = "done" if self.n == self.steps else rng.choice(STATUSES)
        state["session"]["updated_at"] = self.clock
        state["scratchpad"] = prose(rng, rng.randint(SCRATCH_MIN, SCRATCH_MAX))
        pieces.append(
            {
                "step": state["step"],
                "status": state["status"],
                "updated_at": self.clock,
                "counters": dict(counters),
                "turns": {agent: state["agents"][agent]["turns"]},
            }
        )
        pieces.append(state["scratchpad"])
        if self.window is not None:
            # Trim in place from the front (``del l[:k]``), so tracked lists see a front trim.
            for lst in (state["messages"], *(a["memory"] for a in state["agents"].values())):
                if len(lst) > self.window:
                    del lst[: len(lst) - self.window]
        return pieces


def calibrate(seed: int, steps: int, msg_scale: float = 1.0, window: int | None = None) -> dict[str, float]:
    """Run the workload once and measure it: final state size, new content, ideal bytes."""
    from tools.bench.ideal import Ideal

    t = time.perf_counter()
    w = Workload(seed, steps, msg_scale, window)
    ideal = Ideal(w.state)
    new_raw = 0
    for _ in range(steps):
        pieces = w.step()
        new_raw += len(orjson.dumps(pieces))
        ideal.add(pieces)
    final = orjson.dumps(w.state)
    messages = w.state["messages"]
    return {
        "seed": seed,
        "steps": steps,
        "msg_scale": msg_scale,
        "final_state_bytes": len(final),
        "messages": len(messages),
        "tool_results": sum(1 for m in messages if m["role"] == "tool"),
        "new_content_bytes": new_raw,
        "new_content_bytes_per_step": new_raw / steps,
        "ideal_bytes": ideal.total,
        "ideal_bytes_per_step": ideal.total / steps,
        "new_content_compression_ratio": new_raw / max(1, ideal.total - ideal.initial),
        "seconds": time.perf_counter() - t,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Print the calibration numbers of the bench workload.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--msg-scale", type=float, default=1.0)
    ap.add_argument("--window", type=int, default=None, help="keep only the last N messages and memory entries")
    args = ap.parse_args()
    for key, value in calibrate(args.seed, args.steps, args.msg_scale, args.window).items():
        print(f"{key:32} {value:,.3f}" if isinstance(value, float) else f"{key:32} {value:,}")


if __name__ == "__main__":
    main()
