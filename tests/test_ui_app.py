"""castate ui's app over a real local store, through ASGI (no browser): what each JSON
endpoint returns, and what the app refuses (foreign hosts, writes without the flag or token)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest

import castate
from castate.ui.app import create_app
from castate.ui.explorer import FOLD, Explorer

HOST = "127.0.0.1:8765"
HOSTS = frozenset({"127.0.0.1", HOST, "localhost", "localhost:8765"})
TOKEN = "t0ken"


def message(i: int) -> dict:
    return {"role": "user" if i % 2 else "assistant", "content": f"message number {i}"}


async def build(sm: castate.StateManager) -> dict[str, str]:
    cps = {}
    messages: list[dict] = []
    for step in range(6):
        messages.append(message(step))
        await sm.save_session("run-1", {"step": step, "messages": list(messages), "doc": "d" * (FOLD + 10 * step)})
        if step in (2, 4):
            cps[step] = await sm.create_checkpoint("run-1", f"cp-{step}")
    await sm.fork(cps[2], "run-1-retry")
    await sm.save_session("run-1-retry", {"step": 3, "messages": [*messages[:3], message(99)], "doc": "retry"})
    await sm.save_session("other", {"a": 1})
    return {"cp2": cps[2], "cp4": cps[4]}


@pytest.fixture
async def sm(store_path: Path) -> AsyncIterator[castate.StateManager]:
    async with castate.StateManager(castate.FileStorageBackend(store_path)) as manager:
        yield manager


def client(sm: castate.StateManager, *, writes: bool = False, host: str = HOST) -> httpx.AsyncClient:
    app = create_app(Explorer(sm), allow_writes=writes, hosts=HOSTS, token=TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


async def get(c: httpx.AsyncClient, url: str, status: int = 200, **params: object) -> dict:
    r = await c.get(url, params=params)
    assert r.status_code == status, r.text
    return r.json()


async def test_sessions_and_timeline_agree_with_the_library(sm: castate.StateManager) -> None:
    cps = await build(sm)
    async with client(sm) as c:
        rows = {r["session_id"]: r for r in (await get(c, "/api/sessions"))["sessions"]}
        assert sorted(rows) == ["other", "run-1", "run-1-retry"]
        run = rows["run-1"]
        assert (run["saves"], run["checkpoints"]) == (6, 2)
        stats = await sm.stats()
        assert run["logical_bytes"] == next(s.head_bytes for s in stats.largest if s.session == "run-1")
        assert rows["run-1-retry"]["saves"] == 4  # three inherited from run-1, then its own

        t = await get(c, "/api/timeline", session="run-1")
        points = t["points"]
        log = await sm.repository.log("sessions/run-1")
        assert [p["commit"] for p in points] == [cid.hex() for cid, _ in reversed(log)]
        assert t["stored_bytes"] == run["stored_bytes"] == sum(p["new_bytes"] for p in points)
        assert all(p["new_bytes"] > 0 and p["complete"] for p in points)
        flagged = {p["commit"]: [c["checkpoint_id"] for c in p["checkpoints"]] for p in points if p.get("checkpoints")}
        cp_commits = {c.checkpoint_id: c.commit for c in await sm.list_checkpoints("run-1")}
        assert flagged == {cp_commits[cps["cp2"]]: [cps["cp2"]], cp_commits[cps["cp4"]]: [cps["cp4"]]}
        fork_point = next(p for p in points if p.get("marks"))
        assert fork_point["commit"] == cp_commits[cps["cp2"]]
        assert fork_point["marks"][0]["text"] == "forked to run-1-retry"

        retry = await get(c, "/api/timeline", session="run-1-retry")
        assert [p["session"] for p in retry["points"]] == ["run-1"] * 3 + ["run-1-retry"]
        assert retry["points"][2]["marks"][0]["text"].startswith("forked from checkpoint")
        # The inherited saves have the numbers they have in run-1's own timeline.
        assert [p["new_bytes"] for p in retry["points"][:3]] == [p["new_bytes"] for p in points[:3]]
        assert (await get(c, "/api/timeline", 404, session="nope"))["type"] == "NotFoundError"


async def test_diff_between_checkpoints_shows_the_added_message(sm: castate.StateManager) -> None:
    cps = await build(sm)
    async with client(sm) as c:
        d = await get(c, "/api/diff", a=cps["cp2"], b=cps["cp4"])
        assert d["counts"] == {"add": 2, "remove": 0, "replace": 2}
        added = [ch for ch in d["changes"] if ch["op"] == "add"]
        assert [ch["path"] for ch in added] == ["/messages/3", "/messages/4"]
        assert added[0]["new"] == message(3)
        doc = next(ch for ch in d["changes"] if ch["path"] == "/doc")
        assert doc["new"] == {"$folded": "d" * FOLD, "$length": FOLD + 40}  # long strings folded
        assert d["a"]["commit"] == (await sm.resolve(cps["cp2"])).commit.hex()
        same = await get(c, "/api/diff", a="session:run-1", b="run-1")
        assert same["total"] == 0
        await get(c, "/api/diff", 404, a="run-1", b="nope")


async def test_tree_and_value(sm: castate.StateManager) -> None:
    await build(sm)
    async with client(sm) as c:
        root = await get(c, "/api/tree", rev="run-1")
        items = {i["key"]: i for i in root["node"]["items"]}
        assert items["messages"] == {"key": "messages", "kind": "list", "size": 6, "value": None, "complete": False}
        assert items["doc"]["size"] == FOLD + 50
        assert not items["doc"]["complete"]
        page = await get(c, "/api/tree", rev="run-1", path="/messages", offset=4, limit=1)
        assert page["node"]["offset"] == 4
        assert [i["key"] for i in page["node"]["items"]] == [4]
        one = await get(c, "/api/tree", rev="run-1", path="/messages/4/content")
        assert one["node"]["value"] == "message number 4"
        whole = await get(c, "/api/value", rev="run-1", path="/doc")
        assert whole["value"] == "d" * (FOLD + 50)
        await get(c, "/api/value", 400, rev="run-1", path="/messages")
        await get(c, "/api/tree", 400, rev="run-1", path="messages")  # not a JSON pointer
        await get(c, "/api/tree", 404, rev="run-1", path="/nope")
        await get(c, "/api/tree", 400, rev="run-1", offset="-1")


async def test_health_shows_recorded_runs(sm: castate.StateManager) -> None:
    await build(sm)
    async with client(sm) as c:
        h = await get(c, "/api/health")
        assert h["last_gc"] is None
        assert h["last_fsck"] is None
        assert h["now"]["sessions"] == 3
        await sm.fsck(record=True)
        await sm.gc(record=True)
        h = await get(c, "/api/health")
        assert h["last_fsck"]["ok"] is True
        assert h["last_gc"]["op"] == "gc"
        assert [r["op"] for r in h["runs"]] == ["fsck", "gc"]
        assert h["now"]["logical_bytes"] >= h["last_fsck"]["logical_bytes"] > 0
        assert h["now"]["store_bytes"] > 0


async def test_page_assets_and_headers(sm: castate.StateManager) -> None:
    async with client(sm) as c:
        page = await c.get("/")
        assert page.status_code == 200
        assert '"writes":false' in page.text
        assert TOKEN not in page.text  # no token without writes
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert (await c.get("/static/app.js")).headers["content-type"].startswith("text/javascript")
        assert (await c.get("/static/style.css")).status_code == 200
        for path in ("/static/index.html", "/static/../../pyproject.toml", "/static/%2e%2e/app.py", "/api/nope"):
            assert (await c.get(path)).status_code == 404, path
    async with client(sm, host="evil.example:8765") as c:
        assert (await c.get("/api/sessions")).status_code == 421  # DNS rebinding: refused


async def test_write_actions_exist_only_when_allowed(sm: castate.StateManager) -> None:
    cps = await build(sm)
    body = {"source": cps["cp2"], "new_session": "from-ui"}
    async with client(sm) as c:
        for action in ("fork", "undo-fork", "restore", "checkpoint"):
            r = await c.post(f"/api/actions/{action}", json=body, headers={"X-Castate-Token": TOKEN})
            assert r.status_code == 404
    async with client(sm, writes=True) as c:
        assert TOKEN in (await c.get("/")).text
        assert (await c.post("/api/actions/fork", json=body)).status_code == 403  # no token
        r = await c.post(
            "/api/actions/fork",
            content=b'{"source": "x", "new_session": "y"}',
            headers={"X-Castate-Token": TOKEN, "Content-Type": "text/plain"},
        )
        assert r.status_code == 403  # a form post from another site cannot be JSON
        r = await c.post("/api/actions/fork", json=body, headers={"X-Castate-Token": TOKEN})
        assert r.status_code == 200, r.text
        assert r.json()["head"] == (await sm.resolve(cps["cp2"])).commit.hex()
        again = await c.post("/api/actions/fork", json=body, headers={"X-Castate-Token": TOKEN})
        assert again.status_code == 409
        fork_head = r.json()["head"]
        r = await c.post(
            "/api/actions/checkpoint",
            json={"session": "from-ui", "name": "ui", "expected": fork_head},
            headers={"X-Castate-Token": TOKEN},
        )
        assert r.json()["checkpoint_id"].startswith("from-ui/ui/")
        run1 = (await sm.resolve("run-1")).commit.hex()
        r = await c.post(
            "/api/actions/restore",
            json={"source": cps["cp4"], "session": "run-1", "expected": run1},
            headers={"X-Castate-Token": TOKEN},
        )
        assert r.json()["changed"] is True
        assert r.json()["previous"] == run1
    assert [c.name for c in await sm.list_checkpoints("from-ui")] == ["ui"]
    assert (await sm.resolve("run-1")).commit == (await sm.resolve(cps["cp4"])).commit


async def test_actions_send_the_head_the_page_showed(sm: castate.StateManager) -> None:
    # Issue 20 item 4: a restore or checkpoint from a stale page is a conflict that says what
    # happened, never a silent overwrite of newer saves or the re-creation of a deleted session.
    cps = await build(sm)
    headers = {"X-Castate-Token": TOKEN}
    async with client(sm, writes=True) as c:
        shown = (await get(c, "/api/timeline", session="run-1"))["head"]
        assert shown == (await sm.resolve("run-1")).commit.hex()
        for body in ({"source": cps["cp2"], "session": "run-1"}, {"session": "run-1", "name": "x"}):
            action = "restore" if "source" in body else "checkpoint"
            r = await c.post(f"/api/actions/{action}", json=body, headers=headers)
            assert r.status_code == 400
            assert "expected" in r.json()["error"]

        await sm.save_session("run-1", {"step": 99})  # another writer, after the page was drawn
        newer = (await sm.resolve("run-1")).commit
        r = await c.post(
            "/api/actions/restore", json={"source": cps["cp2"], "session": "run-1", "expected": shown}, headers=headers
        )
        assert r.status_code == 409
        assert f"is at {newer.hex()[:12]}" in r.json()["error"]
        assert "nothing restored" in r.json()["error"]
        r = await c.post(
            "/api/actions/checkpoint", json={"session": "run-1", "name": "late", "expected": shown}, headers=headers
        )
        assert r.status_code == 409
        assert (await sm.resolve("run-1")).commit == newer  # untouched
        assert all(cp.name != "late" for cp in await sm.list_checkpoints("run-1"))

        await sm.delete_session("other")
        r = await c.post(
            "/api/actions/restore",
            json={"source": cps["cp2"], "session": "other", "expected": "00" * 32},
            headers=headers,
        )
        assert r.status_code == 409
        assert "no longer exists" in r.json()["error"]
        assert "other" not in [s.session_id for s in await sm.list_sessions()]  # not re-created

        # The restore reports the head it replaced; the head's history lists it, restorable.
        r = await c.post(
            "/api/actions/restore",
            json={"source": cps["cp2"], "session": "run-1", "expected": newer.hex()},
            headers=headers,
        )
        assert r.status_code == 200
        assert r.json()["previous"] == newer.hex()
        log = await get(c, "/api/reflog", session="run-1", saves="0")
        assert log["head"] == (await sm.resolve(cps["cp2"])).commit.hex()
        top = log["entries"][0]
        assert top["message"].startswith("restore run-1 to")
        assert (top["old"], top["new"], top["old_restorable"]) == (newer.hex(), log["head"], True)
        assert all(not e["message"].startswith("save ") for e in log["entries"])
        everything = await get(c, "/api/reflog", session="run-1", limit=3)
        assert len(everything["entries"]) == 3
        assert everything["total"] > log["total"]
        # Undo: restore the replaced head, expecting the one the restore made.
        r = await c.post(
            "/api/actions/restore",
            json={"source": newer.hex(), "session": "run-1", "expected": log["head"]},
            headers=headers,
        )
        assert r.status_code == 200
        assert (await sm.resolve("run-1")).commit == newer
        await get(c, "/api/reflog", 404, session="nope")
        await get(c, "/api/reflog", 400, session="run-1", saves="yes")


async def test_a_fork_can_be_undone_only_while_nothing_moved_it(sm: castate.StateManager) -> None:
    cps = await build(sm)
    headers = {"X-Castate-Token": TOKEN}

    async def post(c: httpx.AsyncClient, action: str, status: int, **body: str) -> dict:
        r = await c.post(f"/api/actions/{action}", json=body, headers=headers)
        assert r.status_code == status, r.text
        return r.json()

    async with client(sm) as c:
        assert (await c.post("/api/actions/undo-fork", json={}, headers=headers)).status_code == 404
    async with client(sm, writes=True) as c:
        r = await c.post("/api/actions/undo-fork", json={"session": "run-1", "expected": "00" * 32})
        assert r.status_code == 403  # no token
        head = (await post(c, "fork", 200, source=cps["cp2"], new_session="try"))["head"]
        await post(c, "undo-fork", 400, session="try", expected="not a commit")
        await post(c, "undo-fork", 409, session="try", expected="00" * 32)  # not the head the fork made
        assert (await post(c, "undo-fork", 200, session="try", expected=head))["deleted"] == head
        assert "try" not in [s.session_id for s in await sm.list_sessions()]
        assert (await get(c, "/api/reflog", session="try", saves="0"))["entries"][0]["message"] == "undo fork try"
        gone = await post(c, "undo-fork", 409, session="try", expected=head)  # twice: nothing left to undo
        assert "no longer exists" in gone["error"]

        # A session that is not a fork, or a fork that was saved to or checkpointed since, stays.
        run1 = (await sm.resolve("run-1")).commit.hex()
        assert "moved since the fork" in (await post(c, "undo-fork", 409, session="run-1", expected=run1))["error"]
        head = (await post(c, "fork", 200, source=cps["cp2"], new_session="try"))["head"]
        await sm.save_session("try", {"step": 3, "other": True})
        moved = await post(c, "undo-fork", 409, session="try", expected=head)
        assert "nothing was deleted" in moved["error"]
        assert "try" in [s.session_id for s in await sm.list_sessions()]
        head = (await post(c, "fork", 200, source=cps["cp4"], new_session="try-2"))["head"]
        await sm.create_checkpoint("try-2", "keep")
        assert "checkpoint" in (await post(c, "undo-fork", 409, session="try-2", expected=head))["error"]
        assert (await sm.resolve("try-2")).commit.hex() == head
    assert (await sm.resolve("run-1")).commit.hex() == run1


def test_every_static_file_is_package_data() -> None:
    root = Path(__file__).parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["castate.ui"]
    files = [p.relative_to(root / "castate" / "ui").as_posix() for p in (root / "castate/ui/static").iterdir()]
    assert files
    for f in files:
        assert any(fnmatch(f, pat) for pat in patterns), f


def test_castate_core_never_imports_the_ui_stack() -> None:
    # Everything but the UI package (and the integrations and demo), the CLI included: the CLI
    # imports the UI only when `castate ui` runs.
    code = (
        "import sys, pkgutil, importlib, castate\n"
        "skip = ('castate.integrations.', 'castate.ui.', 'castate.demo')\n"
        "for m in pkgutil.walk_packages(castate.__path__, 'castate.'):\n"
        "    if not m.name.startswith(skip) and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "ui = ('starlette', 'uvicorn', 'playwright')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ui or n.startswith('castate.ui.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_numeric_parameters_and_pointers_are_validated(sm: castate.StateManager) -> None:
    # Issue 16 item 12: every numeric parameter is checked (a 400 that says why, never a 500),
    # and a JSON pointer with an escape RFC 6901 does not define is refused, not read literally.
    await sm.save_session("s", {"a~2": 1, "a~b": 2, "list": [1, 2, 3]})
    async with client(sm) as c:
        for bad in ("²", "٣", "1" * 30, "-1", "+1", " 1", "1.0", "0x10", ""):
            err = await get(c, "/api/tree", 400, rev="s", path="/list", offset=bad)
            assert "offset must be" in err["error"], (bad, err)
        for bad in ("0", "1001", "abc"):
            assert "limit must be" in (await get(c, "/api/tree", 400, rev="s", path="/list", limit=bad))["error"]
        page = await get(c, "/api/tree", rev="s", path="/list", offset="1", limit="1000")
        assert [i["value"] for i in page["node"]["items"]] == [2, 3]
        assert (await get(c, "/api/tree", rev="s", path="/list", offset="999999999999"))["node"]["items"] == []
        for bad in ("/a~2", "/a~", "/~x"):
            err = await get(c, "/api/tree", 400, rev="s", path=bad)
            assert "RFC 6901" in err["error"], bad
            await get(c, "/api/value", 400, rev="s", path=bad)
        assert (await get(c, "/api/tree", rev="s", path="/a~02"))["node"]["value"] == 1  # "~0" then "2": the key "a~2"


def test_parse_pointer_follows_rfc_6901() -> None:
    from castate.errors import InvalidKeyError
    from castate.repository.tree import parse_pointer

    assert parse_pointer("") == []
    assert parse_pointer("/a~1b/~0/~01/") == ["a/b", "~", "~1", ""]
    for bad in ("/~2", "/a~", "/~~0", "a"):
        with pytest.raises(InvalidKeyError):
            parse_pointer(bad)


def test_text_diff_shows_the_changed_lines_and_words() -> None:
    from castate.ui.textdiff import text_diff

    report = "# Report\n" + "".join(f"- fact {i}\n" for i in range(100))
    d = text_diff(report, report + "- fact 100\n")
    assert (d["added"], d["removed"], d["lines_a"], d["lines_b"]) == (1, 0, 101, 102)
    assert d["rows"][0] == {"t": "skip", "n": 99}  # the unchanged head is counted, not sent
    assert [r["t"] for r in d["rows"][1:]] == ["=", "=", "+"]
    assert d["rows"][-1] == {"t": "+", "line": 102, "text": "- fact 100\n"}
    edit = text_diff("the quick fox\nsame\n", "the slow fox\nsame\n")["rows"][0]
    assert edit["t"] == "~"
    assert edit["words"] == [["=", "the "], ["-", "quick"], ["+", "slow"], ["=", " fox\n"]]


async def test_diff_sends_runs_counts_by_key_a_path_filter_and_text_diffs(sm: castate.StateManager) -> None:
    messages = [message(i) for i in range(3)]
    doc = "".join(f"line {i}\n" for i in range(50))
    await sm.save_session("s", {"messages": list(messages), "doc": doc, "n": 1})
    a = (await sm.resolve("s")).commit.hex()
    await sm.save_session(
        "s", {"messages": [*messages, *(message(i) for i in range(3, 40))], "doc": doc + "end\n", "n": 2}
    )
    async with client(sm) as c:
        d = await get(c, "/api/diff", a=a, b="s")
        assert d["counts"] == {"add": 37, "remove": 0, "replace": 2}
        assert d["by_key"]["/messages"] == {"add": 37, "remove": 0, "replace": 0}
        run = next(ch for ch in d["changes"] if ch.get("run"))
        assert (run["op"], run["path"], run["first"], run["count"]) == ("add", "/messages", 3, 37)
        assert run["roles"] == {"user": 19, "assistant": 18}  # odd items are the user's
        assert run["items"][0] == {"op": "add", "path": "/messages/3", "new": message(3)}
        assert d["entries"] == 3  # the run, /doc and /n
        text = next(ch for ch in d["changes"] if ch.get("path") == "/doc")["text_diff"]
        assert [r for r in text["rows"] if r["t"] == "+"] == [{"t": "+", "line": 51, "text": "end\n"}]
        assert "text_diff" not in next(ch for ch in d["changes"] if ch.get("path") == "/n")
        only = await get(c, "/api/diff", a=a, b="s", path="/doc")
        assert [ch["path"] for ch in only["changes"]] == ["/doc"]
        assert only["matching"] == 1
        assert only["total"] == 39
        paged = await get(c, "/api/diff", a=a, b="s", offset=1, limit=1)
        assert len(paged["changes"]) == 1
        assert paged["truncated"] is True
        await get(c, "/api/diff", 400, a=a, b="s", path="/~2")


async def test_long_histories_are_measured_in_the_background(
    sm: castate.StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import castate.ui.explorer as explorer_module

    for step in range(12):
        await sm.save_session("run", {"step": step, "items": list(range(step * 10))})
    expected = await Explorer(sm).timeline("run")  # short enough to measure within the request
    monkeypatch.setattr(explorer_module, "INLINE_GROWTH", 4)
    ex = Explorer(sm)
    # The background measure waits for the gate, so the documents in between are read while
    # it is surely unfinished (the store's reads hop to threads, letting the task run).
    gate = asyncio.Event()
    measure = ex.growth.history

    async def gated(chain: Any) -> Any:
        await gate.wait()
        return await measure(chain)

    monkeypatch.setattr(ex.growth, "history", gated)
    first = await ex.sessions()
    assert first["growth_pending"] is True
    assert first["sessions"][0]["saves"] == 12
    assert first["sessions"][0]["stored_bytes"] is None  # not measured yet, said so
    pending = await ex.timeline("run")
    assert pending["growth_pending"] is True
    assert all(p["new_bytes"] is None for p in pending["points"])
    gate.set()
    await ex.settle()
    done = await ex.timeline("run")
    assert done["growth_pending"] is False
    assert done["points"] == expected["points"]  # the same numbers as measured in one go
    assert (await ex.sessions())["sessions"][0]["stored_bytes"] == expected["stored_bytes"]
    # One more save: only it is read (the chain and the walk continue where they stopped).
    await sm.save_session("run", {"step": 12, "items": list(range(120))})
    more = await ex.timeline("run")
    assert len(more["points"]) == 13
    assert more["points"][:12] == expected["points"]
    assert more["head"] == (await sm.resolve("run")).commit.hex()
    await ex.close()


async def test_tree_sums_up_messages_and_serves_downloads(sm: castate.StateManager) -> None:
    call = {"role": "assistant", "name": "researcher", "content": "", "tool_calls": [{"id": "c1", "name": "search"}]}
    answer = {"role": "tool", "tool_call_id": "c1", "content": "found " + "x" * 300}
    await sm.save_session(
        "s", {"messages": [message(1), call, answer, {"not": "a message"}], "blob": b"\x00\x01" * 400}
    )
    async with client(sm) as c:
        items = (await get(c, "/api/tree", rev="s", path="/messages"))["node"]["items"]
        assert items[0]["message"] == {"role": "user", "content": "message number 1", "content_size": 16}
        assert items[1]["message"]["calls"] == [{"id": "c1", "name": "search"}]
        assert items[1]["message"]["name"] == "researcher"
        assert items[2]["message"]["tool_call_id"] == "c1"
        assert items[2]["message"]["content_size"] == 306
        assert len(items[2]["message"]["content"]) == 160  # a preview
        assert "message" not in items[3]
        r = await c.get("/api/download", params={"rev": "s", "path": "/blob"})
        assert r.status_code == 200
        assert r.content == b"\x00\x01" * 400
        assert r.headers["content-disposition"] == 'attachment; filename="value.bin"'
        assert r.headers["x-content-type-options"] == "nosniff"
        r = await c.get("/api/download", params={"rev": "s", "path": "/messages/2/content"})
        assert r.text == answer["content"]
        assert (await c.get("/api/download", params={"rev": "s", "path": "/messages"})).status_code == 400


async def test_a_store_deleted_while_served_is_an_error_that_says_so(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "store"
    async with castate.StateManager(castate.FileStorageBackend(path)) as sm:
        await sm.save_session("a", {"x": 1})
        async with client(sm) as c:
            shutil.rmtree(path)
            for url in ("/api/sessions", "/api/health", "/api/timeline"):
                r = await c.get(url, params={"session": "a"})
                assert r.status_code in (500, 503)
                assert str(path) in r.json()["error"]  # names what is missing, as JSON the page shows inline


async def test_health_walks_the_store_again_only_when_refs_moved(
    sm: castate.StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import castate.ui.explorer as explorer_module

    await sm.save_session("a", {"x": 1})
    ex = Explorer(sm)
    first = await ex.health()
    assert (await ex.health())["now"] is first["now"]  # nothing moved: the same numbers, no walk
    await sm.save_session("b", {"y": 2})
    assert (await ex.health())["now"] is first["now"]  # moved, but walked less than HEALTH_EVERY ago
    monkeypatch.setattr(explorer_module, "HEALTH_EVERY", 0.0)
    again = await ex.health()
    assert again["now"]["sessions"] == 2
    await sm.fsck(record=True)
    assert [r["op"] for r in (await ex.health())["runs"]] == ["fsck"]  # runs are read on every call


async def test_typed_values_in_the_tree_and_the_diff(sm: castate.StateManager) -> None:
    import datetime as dt
    import uuid

    when = dt.datetime(2026, 12, 5, 2, 10, 23, tzinfo=dt.UTC)
    await sm.save_session("typed", {"at": when, "id": uuid.UUID(int=7), "pair": (1, "x"), "inf": float("inf")})
    cp = await sm.create_checkpoint("typed", "one")
    await sm.save_session("typed", {"at": when + dt.timedelta(minutes=1), "id": uuid.UUID(int=7), "pair": (1, "y")})
    async with client(sm) as c:
        root = await get(c, "/api/tree", rev=cp)
        items = {i["key"]: i for i in root["node"]["items"]}
        assert list(items) == ["at", "id", "pair", "inf"]  # insertion order
        assert (items["at"]["kind"], items["at"]["value"]) == ("datetime", "2026-12-05T02:10:23+00:00")
        assert (items["id"]["kind"], items["id"]["value"]) == ("UUID", "00000000-0000-0000-0000-000000000007")
        assert (items["inf"]["kind"], items["inf"]["value"]) == ("float", "inf")
        assert items["pair"]["kind"] == "tuple"
        d = await get(c, "/api/diff", a=cp, b="typed")
        changes = {ch["path"]: ch for ch in d["changes"]}
        assert changes["/at"]["new"] == {"$datetime": "2026-12-05T02:11:23+00:00"}
        assert changes["/pair"]["new"] == {"$tuple": [1, "y"]}
        assert changes["/inf"]["op"] == "remove"
        assert changes["/inf"]["old"] == {"$float": "inf"}


async def test_sizes_survive_a_restart_through_the_cache(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import castate.ui.explorer as explorer_module
    from castate.ui.sizecache import SizeCache

    monkeypatch.setenv("CASTATE_UI_CACHE", str(tmp_path / "cache"))
    async with castate.StateManager(castate.FileStorageBackend(store_path)) as sm:
        for step in range(12):
            await sm.save_session("run", {"step": step, "items": list(range(step * 10))})
        expected = await Explorer(sm).timeline("run")  # measured in one go, no cache
    store_files = sorted(p.relative_to(store_path) for p in store_path.rglob("*"))
    monkeypatch.setattr(explorer_module, "INLINE_GROWTH", 4)

    async def served() -> tuple[Explorer, castate.StateManager]:
        sm = castate.StateManager(castate.FileStorageBackend(store_path))
        await sm.__aenter__()
        return Explorer(sm, SizeCache.for_backend(sm.repository.backend)), sm

    ex, sm = await served()
    assert (await ex.timeline("run"))["growth_pending"] is True  # nothing kept yet: measured in the background
    await ex.settle()
    assert ex.cache is not None
    assert ex.cache.path.parent == tmp_path / "cache"
    assert ex.cache.path.stat().st_mode & 0o777 == 0o600
    await ex.close()
    await sm.__aexit__(None, None, None)
    # The store's directory is left as it was: the cache lives in the user's cache dir.
    assert sorted(p.relative_to(store_path) for p in store_path.rglob("*")) == store_files

    ex, sm = await served()  # a restart: 12 saves to measure would go to the background again
    again = await ex.timeline("run")
    assert again["growth_pending"] is False
    assert again["points"] == expected["points"]
    # New saves after the restart: the walk continues from the cache, within the request.
    await sm.save_session("run", {"step": 12, "items": list(range(120))})
    more = await ex.timeline("run")
    assert more["growth_pending"] is False
    async with castate.StateManager(castate.FileStorageBackend(store_path)) as fresh:
        measured = Explorer(fresh)  # no cache: measures the 13 saves from the start
        await measured.timeline("run")
        await measured.settle()
        assert more["points"] == (await measured.timeline("run"))["points"]
    rows = (await ex.sessions())["sessions"]
    assert rows[0]["stored_bytes"] == more["stored_bytes"]
    await ex.close()
    await sm.__aexit__(None, None, None)


async def test_a_damaged_or_foreign_size_cache_is_ignored(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import castate.ui.explorer as explorer_module
    from castate.repository.growth import Growth, GrowthState
    from castate.ui.sizecache import MAX_BYTES, SizeCache, decode, encode

    async with castate.StateManager(castate.FileStorageBackend(store_path)) as sm:
        for step in range(8):
            await sm.save_session("run", {"step": step, "items": list(range(step * 10))})
        expected = await Explorer(sm).timeline("run")
        monkeypatch.setattr(explorer_module, "INLINE_GROWTH", 2)
        cache = SizeCache.for_backend(sm.repository.backend, tmp_path / "cache")
        assert cache is not None
        ex = Explorer(sm, cache)
        await ex.timeline("run")
        await ex.settle()
        good = cache.path.read_bytes()
        assert decode(good, cache.key).done

        forged_numbers = GrowthState([(b"\0" * 32, Growth(b"\1" * 32, 1, 2, 3))], [], {})
        bad_index = bytearray(encode(GrowthState([], [(b"\0" * 32, b"\1" * 32, {b"\2" * 32})], {}), cache.key))
        bad_index[-36:-32] = (7).to_bytes(4, "little")  # the walk names object 7 of 1
        damaged = {
            "a flipped byte": good[:100] + bytes([good[100] ^ 1]) + good[101:],
            "truncated": good[: len(good) // 2],
            "another store's": encode(decode(good, cache.key), b"\x09" * 32),
            "an index out of range, checksum recomputed": _resum(bytes(bad_index)),
            "empty": b"",
        }
        for what, blob in damaged.items():
            cache.path.write_bytes(blob)
            ex = Explorer(sm, cache)
            t = await ex.timeline("run")
            assert t["growth_pending"] is True, what  # ignored: measured again
            assert "ignored" in (cache.note or ""), what
            await ex.settle()
            assert (await ex.timeline("run"))["points"] == expected["points"], what
            assert decode(cache.path.read_bytes(), cache.key).done, what  # and written again whole
        assert (await ex.sessions())["cache_error"] is None  # the last write went well

        # A forged file with a valid checksum can only change the numbers shown, for commits it names.
        cache.path.write_bytes(encode(forged_numbers, cache.key))
        ex = Explorer(sm, cache)
        assert (await ex.timeline("run"))["growth_pending"] is True
        await ex.close()

        cache.path.unlink()
        cache.path.symlink_to(tmp_path / "elsewhere")
        (tmp_path / "elsewhere").write_bytes(good)
        ex = Explorer(sm, cache)
        assert (await ex.timeline("run"))["growth_pending"] is True  # a link is not followed
        await ex.settle()
        await ex.close()
        assert (tmp_path / "elsewhere").read_bytes() == good  # nor written through: replaced by a file
        assert not cache.path.is_symlink()
        cache.path.unlink()
        with open(cache.path, "wb") as f:
            f.truncate(MAX_BYTES + 1)
        ex = Explorer(sm, cache)
        assert (await ex.timeline("run"))["growth_pending"] is True  # too large: not read
        assert "ignored" in (cache.note or "")
        await ex.close()


def _resum(body_and_sum: bytes) -> bytes:
    from blake3 import blake3

    body = body_and_sum[:-32]
    return body + blake3(body).digest()


async def test_the_timeline_is_encoded_once_per_state_of_the_refs(sm: castate.StateManager) -> None:
    import orjson

    from castate.cli.output import to_json

    await build(sm)
    ex = Explorer(sm)
    body = await ex.timeline_json("run-1")
    assert await ex.timeline_json("run-1") is body  # nothing moved: the same bytes
    assert orjson.loads(body) == orjson.loads(to_json(await ex.timeline("run-1"), indent=False))
    when = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    await sm.save_session("run-1", {"step": 6}, metadata={"step": 6, "when": when, "blob": b"\x00", "long": "x" * 3000})
    moved = orjson.loads(await ex.timeline_json("run-1"))
    assert moved["head"] == (await sm.resolve("run-1")).commit.hex()
    assert len(moved["points"]) == len(orjson.loads(body)["points"]) + 1
    assert moved["points"][-1]["meta"] == {  # typed and long values as everywhere else on the page
        "step": 6,
        "when": {"$datetime": "2026-01-15T09:00:00+00:00"},
        "blob": {"$bytes": "AA=="},
        "long": {"$folded": "x" * FOLD, "$length": 3000},
    }
    assert moved["points"][0]["meta"] == {}


async def test_a_local_store_has_one_cache_file_however_it_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castate.ui.sizecache import SizeCache

    async with castate.StateManager(castate.FileStorageBackend(tmp_path / "s")) as sm:
        await sm.save_session("a", {"x": 1})
        absolute = SizeCache.for_backend(sm.repository.backend, tmp_path / "c")
    monkeypatch.chdir(tmp_path)
    async with castate.StateManager(castate.FileStorageBackend(Path("s"))) as sm:
        relative = SizeCache.for_backend(sm.repository.backend, tmp_path / "c")
    assert absolute is not None
    assert relative is not None
    assert absolute.path == relative.path
    async with castate.StateManager(f"sqlite:///{tmp_path / 'db.sqlite'}") as sm:
        await sm.save_session("a", {"x": 1})
        database = SizeCache.for_backend(sm.repository.backend, tmp_path / "c")  # an id of its own
    assert database is not None
    assert database.path != absolute.path
    async with castate.StateManager(castate.MemoryBackend()) as sm:
        assert SizeCache.for_backend(sm.repository.backend, tmp_path / "c") is None  # no store id: no file


async def test_warming_reads_the_histories_once_for_requests_that_arrive_meanwhile(
    sm: castate.StateManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    await build(sm)
    expected_sessions = await Explorer(sm).sessions()
    expected_timeline = await Explorer(sm).timeline("run-1")
    one_by_one: list[bytes] = []
    read_commit = sm.repository.read_commit

    async def counted(cid: bytes) -> object:
        one_by_one.append(cid)
        return await read_commit(cid)

    monkeypatch.setattr(sm.repository, "read_commit", counted)
    ex = Explorer(sm)
    ex.start_warming()  # as `castate ui` does on start; two views are asked for at once meanwhile
    rows, timeline = await asyncio.gather(ex.sessions(), ex.timeline("run-1"))
    assert rows == expected_sessions
    assert timeline == expected_timeline
    assert one_by_one == []  # every commit came from the one batch the reflog names
    await ex.close()


async def test_the_progress_of_an_interrupted_measure_is_kept(
    sm: castate.StateManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import castate.ui.explorer as explorer_module
    from castate.ui.sizecache import SizeCache, decode

    for step in range(12):
        await sm.save_session("run", {"step": step, "items": list(range(step * 10))})
    expected = await Explorer(sm).timeline("run")
    monkeypatch.setattr(explorer_module, "INLINE_GROWTH", 2)
    monkeypatch.setattr(explorer_module, "GROWTH_SLICE", 3)
    cache = SizeCache.for_backend(sm.repository.backend, tmp_path / "cache")
    assert cache is not None
    ex = Explorer(sm, cache)
    measure = ex.growth.history
    slices: list[int] = []

    async def first_slice_only(chain: list[bytes]) -> object:
        slices.append(len(chain))
        if len(slices) > 1:
            await asyncio.Event().wait()  # the second slice never ends: the server stops first
        return await measure(chain)

    monkeypatch.setattr(ex.growth, "history", first_slice_only)
    assert (await ex.timeline("run"))["growth_pending"] is True
    while len(slices) < 2:
        await asyncio.sleep(0.001)
    await ex.close()  # the server stops mid-measure
    kept = decode(cache.path.read_bytes(), cache.key)
    measured = len(kept.done)
    assert measured == 3
    assert [tip for _, tip, _ in kept.walks] == [bytes.fromhex(expected["points"][measured - 1]["commit"])]

    ex = Explorer(sm, cache)
    await ex.timeline("run")
    assert ex.growth.pending([bytes.fromhex(p["commit"]) for p in expected["points"]]) == 12 - measured
    await ex.settle()
    assert (await ex.timeline("run"))["points"] == expected["points"]  # continued, same numbers
    await ex.close()
