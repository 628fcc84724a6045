"""castate ui's app over a real local store, through ASGI (no browser): what each JSON
endpoint returns, and what the app refuses (foreign hosts, writes without the flag or token)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

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
        flagged = {p["commit"]: [c["checkpoint_id"] for c in p["checkpoints"]] for p in points if p["checkpoints"]}
        cp_commits = {c.checkpoint_id: c.commit for c in await sm.list_checkpoints("run-1")}
        assert flagged == {cp_commits[cps["cp2"]]: [cps["cp2"]], cp_commits[cps["cp4"]]: [cps["cp4"]]}
        fork_point = next(p for p in points if p["marks"])
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
        for action in ("fork", "restore", "checkpoint"):
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
        r = await c.post(
            "/api/actions/checkpoint", json={"session": "from-ui", "name": "ui"}, headers={"X-Castate-Token": TOKEN}
        )
        assert r.json()["checkpoint_id"].startswith("from-ui/ui/")
        r = await c.post(
            "/api/actions/restore", json={"source": cps["cp4"], "session": "run-1"}, headers={"X-Castate-Token": TOKEN}
        )
        assert r.json()["changed"] is True
    assert [c.name for c in await sm.list_checkpoints("from-ui")] == ["ui"]
    assert (await sm.resolve("run-1")).commit == (await sm.resolve(cps["cp4"])).commit


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
