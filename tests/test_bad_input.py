"""The bad-input catalogue: odd names and unsupported values get clear errors or work, safely."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import castate
from castate.errors import InvalidKeyError, UnsupportedValueError

ROOT = Path(__file__).resolve().parents[1]

ODD_NAMES = [
    "../../etc/passwd",
    "a/b",
    "/absolute",
    "..",
    ".",
    "\x00",
    "nul\x00inside",
    "x" * 1000,
    "ünïcödé ✓ 日本語 😀",
    "con",
    "with space and\ttab\nnewline",
    "%2F already-encoded",
    "a\\b",
    "*?[glob]",
]


def tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


STORE_FILES = {"castate.json", "volumes", "locks", "refs.journal", "refs.snapshot"}


def assert_store_layout(store: Path) -> None:
    """Only the store's own files: a session name never becomes a file or directory name."""
    assert {p.parts[0] for p in tree(store)} <= STORE_FILES
    assert all(re.fullmatch(r"\d{8}\.vol", p.name) for p in (store / "volumes").iterdir())
    assert {p.name for p in (store / "locks").iterdir()} <= {"refs.lock", "gc.lock", "gc.turnstile"}


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_odd_names_work_inside_the_store(tmp_path: Path, name: str) -> None:
    store = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    sm = castate.StateManager(store)
    try:
        await sm.save_session(name, {"who": name})
        cp = await sm.create_checkpoint(name, name)
        assert await sm.load_session(name) == {"who": name}
        assert await sm.restore_checkpoint(cp) == {"who": name}
        assert [s.session_id for s in await sm.list_sessions()] == [name]
        assert [c.name for c in await sm.list_checkpoints(name)] == [name]
        fs = castate.FileStorageBackend(store)
        await fs.save(name, {"k": 1})
        assert await fs.list_keys() == [name]
        assert await fs.load(name) == {"k": 1}
        await fs.close()
        assert await sm.delete_session(name) == 2
    finally:
        await sm.close()
    assert tree(tmp_path) - {Path("outside")} <= {Path("store")} | {Path("store") / p for p in tree(store)}
    assert not any(outside.iterdir())
    assert_store_layout(store)


@pytest.mark.parametrize("name", ["", "x" * 10_000, "bad \udc80 surrogate", 7, None, b"bytes"])
async def test_unusable_names_raise_clearly(store_path: Path, name: Any) -> None:
    sm = castate.StateManager(store_path)
    try:
        await sm.save_session("fine", {"v": 1})
        with pytest.raises(InvalidKeyError):
            await sm.save_session(name, {"v": 2})
        if name is not None:  # None means "the default name" for a checkpoint
            with pytest.raises(InvalidKeyError):
                await sm.create_checkpoint("fine", name)
        with pytest.raises(InvalidKeyError):
            await sm.load_session(name)
        assert [s.session_id for s in await sm.list_sessions()] == ["fine"]
    finally:
        await sm.close()


class _FixedZone(datetime.tzinfo):
    """A tzinfo that is neither ZoneInfo nor timezone: castate cannot keep it exactly."""

    def utcoffset(self, _dt: Any) -> datetime.timedelta:
        return datetime.timedelta(hours=2)


@pytest.mark.parametrize(
    "bad",
    [
        {1, object()},
        (1, bytearray(b"x")),
        datetime.datetime(2024, 1, 1, tzinfo=_FixedZone()),
        lambda: None,
        open,
        2**64,
        -(2**63) - 1,
        {3: "non-str key"},
        object(),
    ],
    ids=lambda v: type(v).__name__,
)
async def test_unsupported_values_fail_before_anything_is_written(store_path: Path, bad: Any) -> None:
    sm = castate.StateManager(store_path)
    try:
        good = {"messages": [{"content": "kept"}], "n": 1}
        await sm.save_session("s", good)
        objects = sum([1 async for _ in sm.repository.backend.iter_objects()])
        with pytest.raises(UnsupportedValueError) as info:
            await sm.save_session("s", {"messages": [{"content": "kept"}, {"payload": {"deep": bad}}], "n": 2})
        assert info.value.path.startswith("state['messages'][1]['payload']")
        assert sum([1 async for _ in sm.repository.backend.iter_objects()]) == objects
        assert await sm.load_session("s") == good
    finally:
        await sm.close()


async def test_cycles_fail_cleanly(store_path: Path) -> None:
    sm = castate.StateManager(store_path)
    try:
        state: dict[str, Any] = {"a": []}
        state["a"].append(state)
        with pytest.raises(UnsupportedValueError, match="cycle"):
            await sm.save_session("s", state)
        assert await sm.list_sessions() == []
    finally:
        await sm.close()


# -- the catalogue: deep nesting, invalid text, NUL in keys, every odd class of name, big inputs --------


async def expect_refused(sm: castate.StateManager, state: Any, match: str) -> UnsupportedValueError:
    """The save raises a clear error before writing, and the session keeps its state."""
    before = sum([1 async for _ in sm.repository.backend.iter_objects()])
    with pytest.raises(UnsupportedValueError, match=match) as info:
        await sm.save_session("s", state)
    assert sum([1 async for _ in sm.repository.backend.iter_objects()]) == before
    assert await sm.load_session("s") == {"kept": True}
    return info.value


async def test_nesting_ten_thousand_levels_deep_is_refused_with_its_path(store_path: Path) -> None:
    async with castate.StateManager(store_path) as sm:
        await sm.save_session("s", {"kept": True})
        deep: Any = 1
        for i in range(10_000):
            deep = {"child": deep} if i % 2 else [deep]
        err = await expect_refused(sm, {"root": deep}, "nested deeper than 200 levels")
        assert err.path.startswith("state['root']['child'][0]['child'][0]")
        assert len(str(err)) < 400  # the path is abbreviated, not 10,000 levels long


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"text": "lone \udc80 low surrogate"}, "state['text']"),
        ({"text": "lone \ud800 high surrogate"}, "state['text']"),
        ({"emoji": "\ud83d\ude00"}, "state['emoji']"),  # a surrogate pair as two code points is not text
        ({"list": ["ok", "bad \udfff"]}, "state['list'][1]"),
        ({"bad \ud800 key": 1}, "state"),
        ({"big": "x" * 100_000 + "\udc00"}, "state['big']"),  # past the size where text is chunked
    ],
    ids=["low", "high", "split-pair", "in-list", "key", "chunked"],
)
async def test_invalid_text_is_refused_with_its_path(store_path: Path, state: dict[str, Any], where: str) -> None:
    async with castate.StateManager(store_path) as sm:
        await sm.save_session("s", {"kept": True})
        err = await expect_refused(sm, state, "surrogate")
        assert err.path == where


async def test_nul_and_other_odd_text_inside_keys_and_values_round_trips(store_path: Path) -> None:
    state = {
        "a\x00b": "value with \x00 inside",
        "\x00": 1,
        "": 2,  # the empty key and the NUL key are different keys
        "\uffff\ufffe": "noncharacters \uffff are valid text",
        "\U0010ffff": "the last code point",
        "e\u0301": "decomposed",
        "\u00e9": "composed",  # looks the same, is another key
        "\u202e": "right-to-left override",
        "tab\tnewline\n": "\r\n\x1b[31m",
        "k" * 100_000: "a 100,000-character key",
    }
    async with castate.StateManager(store_path) as sm:
        await sm.save_session("s", state)
        back = await sm.load_session("s")
        assert back == state
        assert list(back) == list(state)  # keys come back in insertion order, none merged


ODD_CLASSES = {
    "C0 controls": "".join(chr(c) for c in range(1, 32)),
    "DEL and C1 controls": "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0)),
    "bidi overrides": "abc\u202edcba\u202c\u2066x\u2069",
    "zero-width": "a\u200bb\u200cc\u200dd\ufeffe",
    "combining (NFD)": "e\u0301",
    "precomposed (NFC)": "\u00e9",
    "lookalike slashes": "a\uff0fb\u2215c\u2044d\u29f8e",
    "dots": "\u2024\u2024\uff0f",
    "percent-encoded": "%2e%2e%2f%00",
    "emoji ZWJ sequence": "\U0001f469\u200d\U0001f4bb",
    "astral plane": "\U0001f600\U00020000",
    "private use": "\ue000\U000f0000",
    "noncharacters": "\ufdd0\uffff",
    "line separators": "a\u2028b\u2029c\x85d",
    "whitespace only": " \t ",
    "trailing dot and space": "name. ",
    "windows reserved": "NUL.txt",
    "RTL scripts": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "1024 bytes": "\U0001f600" * 256,  # exactly the limit, in 4-byte characters
}


async def test_session_ids_from_every_odd_character_class_stay_distinct_and_inside(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with castate.StateManager(store) as sm:
        checkpoints = {}
        for label, sid in ODD_CLASSES.items():
            await sm.save_session(sid, {"label": label})
            checkpoints[sid] = await sm.create_checkpoint(sid, sid)
        assert {s.session_id for s in await sm.list_sessions()} == set(ODD_CLASSES.values())
        for label, sid in ODD_CLASSES.items():
            assert await sm.load_session(sid) == {"label": label}
            assert await sm.restore_checkpoint(checkpoints[sid]) == {"label": label}
            assert [c.name for c in await sm.list_checkpoints(sid)] == [sid]
        with pytest.raises(InvalidKeyError, match="limit is 1024 bytes"):
            await sm.save_session("\U0001f600" * 256 + "x", {})
        assert (await sm.fsck(full=True)).ok
    assert {p.name for p in tmp_path.iterdir()} == {"store"}
    assert_store_layout(store)


def run_big_case(case: str, tmp_path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.big_input", case, str(tmp_path / case)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = orjson.loads(proc.stdout)
    print(f"\n{result}")
    assert result["store_intact"]
    assert result["peak_rss_mib"] < PEAK_RSS_LIMIT_MIB, "runaway memory"
    return result


PEAK_RSS_LIMIT_MIB = 1536  # measured peaks are 30 to 650 MiB (docs/reliability.md); far above means runaway


def test_ten_thousand_levels_in_a_process_of_its_own(tmp_path: Path) -> None:
    result = run_big_case("nested_10k", tmp_path)
    assert result["outcome"] == "refused"
    assert "nested deeper than 200 levels" in result["error"]


@pytest.mark.parametrize("case", ["text_100mb", "bytes_100mb", "dict_1m", "list_1m"])
def test_big_inputs_round_trip_with_bounded_memory(tmp_path: Path, case: str) -> None:
    assert run_big_case(case, tmp_path)["outcome"] == "round-trip"
