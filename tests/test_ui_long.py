"""castate ui on a long agent run (issue 20): a generated store whose main session has 9,999
saves in its history (``tools.bench.ui_long.build_long``: 10,000 saves, then a restore to the
second-last), driven in Debian's chromium as ``test_ui_browser`` does.

Each test checks one thing a user comes for (find a step, read a far diff, read the
conversation, act safely, keep the view in the URL) and records how long the page took; the
timings are printed at the end of the module (no timed assertions: speed lives in
``tools/bench/ui_long.py``)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

import castate
from tests import test_ui_browser
from tests.test_ui_browser import in_thread, shoot
from tests.ui_support import Server
from tools.bench.ui_long import PNG, build_long

TIMINGS: dict[str, Any] = {}
browser = test_ui_browser.browser  # the same chromium and page fixtures as test_ui_browser
page = test_ui_browser.page


@pytest.fixture(scope="module", autouse=True)
def report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and TIMINGS:
        reporter.write_line("")
        reporter.write_line("castate ui on a 10,000-save session (seconds unless said otherwise):")
        for name, value in TIMINGS.items():
            reporter.write_line(f"  {name:<44} {value}")


@pytest.fixture(scope="module")
def long_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("ui-long") / "state"
    info = in_thread(asyncio.run, build_long(path))
    TIMINGS["build the store (10,000 saves)"] = info["build_s"]

    async def commits() -> dict[str, str]:
        async with castate.StateManager(castate.FileStorageBackend(path)) as sm:
            log = await sm.repository.log("sessions/long-run")
            by_step = {c.meta["step"]: cid.hex() for cid, c in log}
            return {"step-15": by_step[15], "step-24": by_step[24], "step-25": by_step[25], "head": log[0][0].hex()}

    info["commits"] = in_thread(asyncio.run, commits())
    return path, info


@pytest.fixture(scope="module")
def server(long_store: tuple[Path, dict[str, Any]]) -> Iterator[Server]:
    s = Server(long_store[0])
    yield s
    s.stop()


def ready(page: Page, view: str) -> None:
    page.wait_for_selector(f"main[data-view={view}][data-ready]", timeout=60_000)


def load(page: Page, url: str, view: str, name: str | None = None) -> dict[str, Any]:
    """Open ``url`` in a fresh document; when ``name`` is given, record the time from the
    navigation to the view drawn, and each API call's time as the browser saw it."""
    page.goto("about:blank")
    page.goto(url)
    ready(page, view)
    t = page.evaluate(
        """() => ({ready: performance.now() / 1000, api: performance.getEntriesByType('resource')
              .filter(e => e.name.includes('/api/')).map(e => [new URL(e.name).pathname, e.duration / 1000])})"""
    )
    if name:
        TIMINGS[f"{name}: page drawn"] = round(t["ready"], 3)
        for path, seconds in t["api"]:
            TIMINGS[f"{name}: {path}"] = round(seconds, 3)
    return t


def dom_nodes(page: Page) -> int:
    return int(page.evaluate("document.getElementsByTagName('*').length"))


def test_sessions_first_view_is_quick_and_fills_in(page: Page, server: Server) -> None:
    # A fresh server: the sizes of the long histories are measured in the background, so
    # the first view comes at once and fills in by itself.
    load(page, server.url + "#/", "sessions", "sessions, fresh server")
    row = page.locator("tr.session-row[data-session='long-run']")
    assert row.locator("td").nth(3).inner_text() == "9,999"  # thousands separated
    when = row.locator("td").nth(2).locator("time")
    assert when.inner_text().endswith("ago")
    assert "UTC" in (when.get_attribute("title") or "")  # the absolute time, with its zone, on hover
    t0 = time.perf_counter()
    page.locator("#growth-pending").wait_for(state="detached", timeout=60_000)
    TIMINGS["sessions: sizes of every history measured"] = round(time.perf_counter() - t0, 3)
    assert row.locator("td").nth(5).inner_text().endswith(("KiB", "MiB"))
    load(page, server.url + "#/", "sessions", "sessions, again")
    load(page, server.url + "#/health", "health", "health")
    assert page.locator("#card-sessions .value").inner_text() == "10"


def test_step_view_finds_a_step_among_10000_saves(page: Page, server: Server) -> None:
    load(page, server.url + "#/session?id=long-run", "session", "timeline")
    TIMINGS["timeline: DOM elements (count)"] = dom_nodes(page)
    canvas = page.locator("canvas#timeline")
    assert canvas.get_attribute("data-hi") == "9999"
    assert int(canvas.get_attribute("data-columns") or 0) <= 1280  # summed up per pixel column
    assert page.locator("tr.save-row").count() == 25  # one page of the list, not 9,999 rows
    assert dom_nodes(page) < 2000
    assert "of 9,999 · step 9998 · coder" in page.locator("#point-details h3").inner_text()

    page.fill("#jump-step", "121")
    page.click("#jump-go")
    details = page.locator("#point-details")
    assert "Save 122 of 9,999 · step 121 · researcher" in details.locator("h3").inner_text()
    selected = page.locator("tr.save-row.selected")
    assert selected.locator("td.step").inner_text() == "121"
    assert selected.locator("td.node").inner_text() == "researcher"
    assert "save=122" in page.url

    page.select_option("#node-filter", "critic")
    page.fill("#step-filter", "step:100-200")
    page.locator("#filter-count", has_text="25 of 9,999 saves match").wait_for()
    assert {t for t in page.locator("tr.save-row td.node").all_inner_texts()} == {"critic"}
    page.locator("body").click(position={"x": 5, "y": 5})  # leave the filter box: keys move the selection
    page.keyboard.press("j")  # the next save the filter keeps after step 121
    assert "step 123 · critic" in details.locator("h3").inner_text()
    page.keyboard.press("j")
    assert "step 127 · critic" in details.locator("h3").inner_text()
    page.keyboard.press("k")
    assert "step 123 · critic" in details.locator("h3").inner_text()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "step-filter"

    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 200, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 400, box["y"] + 100)
    page.mouse.up()  # drag: zoom into that range
    lo, hi = int(canvas.get_attribute("data-lo") or 0), int(canvas.get_attribute("data-hi") or 0)
    assert 0 < lo < hi < 9999
    assert hi - lo < 3000
    shoot(page, "timeline-long")

    # The whole view is in the address: a reload shows the same save, filter and zoom.
    url = page.url
    assert "node=critic" in url
    assert "q=step:100-200" in url
    load(page, url, "session")
    assert "step 123 · critic" in page.locator("#point-details h3").inner_text()
    assert page.input_value("#step-filter") == "step:100-200"
    assert page.locator("canvas#timeline").get_attribute("data-lo") == str(lo)
    page.keyboard.press("Enter")  # opens the selected state
    ready(page, "tree")
    assert "rev=" in page.url


def test_far_diff_is_grouped_with_a_summary_and_a_path_filter(
    page: Page, server: Server, long_store: tuple[Path, dict[str, Any]]
) -> None:
    c = long_store[1]["commits"]
    load(page, server.url + f"#/diff?a={c['step-15']}&b={c['head']}", "diff", "far diff (step 15 to the head)")
    TIMINGS["far diff: DOM elements (count)"] = dom_nodes(page)
    group = page.locator("#changes > li.change-group[data-path='/messages']")
    added = int(group.get_attribute("data-count") or 0)
    assert added > 2900  # every message since step 15, as one group
    assert f"+{added:,} items" in group.inner_text()
    assert "assistant" in group.inner_text()
    assert "tool" in group.inner_text()  # roles counted
    keys = page.locator("#diff-keys tr[data-key]")
    assert "/messages" in keys.evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert dom_nodes(page) < 3000  # the report's line diff is most of them
    report = page.locator("li.change-replace[data-path='/report'] .textdiff")
    assert "+399 −0 lines" in report.locator(".td-head").inner_text()  # a line per 25 steps since step 15
    shoot(page, "diff-long")

    page.fill("#diff-path", "/report")
    page.press("#diff-path", "Enter")
    ready(page, "diff")
    assert page.locator("#changes > li").count() == 1
    assert "Under /report: 1 change" in page.locator("#diff-summary").inner_text()

    # One appended line of the report: the line diff shows that line, not the unchanged head.
    load(page, server.url + f"#/diff?a={c['step-24']}&b={c['step-25']}&path=/report", "diff")
    rows = page.locator("li[data-path='/report'] .td-add")
    assert rows.count() == 1
    assert "step 25: researcher found fact 1" in rows.inner_text()
    assert page.locator("li[data-path='/report'] .td-eq").count() == 2  # its context: the two lines before


def test_tree_shows_the_conversation_and_bytes(page: Page, server: Server) -> None:
    load(page, server.url + "#/tree?rev=long-run&open=/messages", "tree", "tree with /messages open")
    messages = page.locator("#tree > li[data-path='/messages'] > ul > li.node")
    messages.nth(199).wait_for()
    first = messages.nth(0).locator(".msg")
    assert first.locator(".role").inner_text() == "system"
    call = page.locator("#tree a.call").first
    assert call.inner_text() == "→ search(call_3)"
    call.click()
    assert "flash" in (page.locator("li[data-answers='call_3']").get_attribute("class") or "")
    page.fill("#tree li.goto input", "2900")
    page.click("#tree li.goto button")
    page.locator("li[data-path='/messages/2900']").wait_for()
    assert page.locator("li[data-path='/messages/2900'] .msg .role").inner_text() in ("assistant", "tool")
    shoot(page, "tree-messages")

    figure = page.locator("#tree > li[data-path='/figure']")
    assert f"bytes · {len(PNG)} B" in figure.inner_text()
    assert "89 50 4e 47" in figure.locator(".hex").inner_text()
    assert figure.locator(".b64").count() == 0  # base64 folded away until asked for
    figure.locator("button", has_text="base64").click()
    assert figure.locator(".b64").inner_text().startswith("iVBORw0KGgo")
    figure.locator("button", has_text="show image").click()
    img = figure.locator("img.preview")
    img.wait_for()
    assert page.evaluate("i => i.naturalWidth", img.element_handle()) == 1
    link = figure.locator("a.download").get_attribute("href") or ""
    body = page.evaluate("async u => new Uint8Array(await (await fetch(u)).arrayBuffer()).length", link)
    assert body == len(PNG)


def test_actions_on_a_stale_page_conflict_and_a_restore_can_be_undone(
    page: Page, long_store: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    copy = tmp_path / "state"
    shutil.copytree(long_store[0], copy)
    head = long_store[1]["commits"]["head"]

    async def head_of(sid: str, save: dict[str, Any] | None = None) -> str | None:
        async with castate.StateManager(castate.FileStorageBackend(copy)) as sm:
            if save is not None:
                await sm.save_session(sid, save)
            info = {s.session_id: s.head for s in await sm.list_sessions()}
            return info.get(sid)

    server = Server(copy, "--allow-writes")
    try:
        load(page, server.url + "#/session?id=long-run&save=9000", "session", "timeline (writes)")
        newer = in_thread(asyncio.run, head_of("long-run", {"step": -1, "note": "another writer"}))
        page.click("#do-restore")
        assert "Restore session long-run to save 9,000" in page.locator("#confirm").inner_text()
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.error")
        error = page.locator("#action-result").inner_text()
        assert f"is at {newer[:12]}" in error  # type: ignore[index]
        assert "nothing restored" in error
        assert in_thread(asyncio.run, head_of("long-run")) == newer  # the other writer's save stands

        load(page, server.url + "#/session?id=long-run&save=9000", "session")
        page.click("#do-restore")
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.ok")
        assert "is now at" in page.locator("#action-result").inner_text()
        restored = in_thread(asyncio.run, head_of("long-run"))
        assert restored != newer
        assert page.locator("#head").inner_text() == restored[:12]  # type: ignore[index]  # the view was drawn again
        page.locator("#reflog tr.reflog-row").first.wait_for()
        assert page.locator("#reflog tr.reflog-row").first.get_attribute("data-old") == newer
        shoot(page, "actions-long")
        page.click("#undo")
        page.wait_for_selector("#action-result.ok >> text=Undone")
        assert in_thread(asyncio.run, head_of("long-run")) == newer

        # The head the undo replaced stays in the head history, and can be restored from it.
        page.locator(f"#reflog tr.reflog-row[data-new='{restored}'] button.restore-new").first.click()
        page.click("#confirm-yes")
        page.wait_for_selector(f"#action-result.ok >> text=Restored: session long-run is now at {restored[:12]}")  # type: ignore[index]
        assert in_thread(asyncio.run, head_of("long-run")) == restored
        page.locator("#reflog-saves").check()  # plain saves too: the head before the other writer
        page.locator(f"#reflog tr.reflog-row[data-old='{head}']").first.wait_for()

        # A session deleted after the page was drawn is not re-created by a restore.
        load(page, server.url + "#/session?id=small-3", "session")

        async def delete() -> None:
            async with castate.StateManager(castate.FileStorageBackend(copy)) as sm:
                await sm.delete_session("small-3")

        in_thread(asyncio.run, delete())
        page.click("#do-restore")
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.error")
        assert "no longer exists" in page.locator("#action-result").inner_text()
        assert in_thread(asyncio.run, head_of("small-3")) is None
    finally:
        server.stop()


def test_dark_mode_inline_errors_and_a_stopped_server(page: Page, server: Server, long_store: tuple[Path, Any]) -> None:
    page.emulate_media(color_scheme="dark")
    load(page, server.url + "#/session?id=long-run", "session")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 24, 30)"
    shoot(page, "timeline-dark")
    page.emulate_media(color_scheme="light")

    load(page, server.url + "#/diff?a=long-run&b=no-such-session", "diff")
    error = page.locator("#diff-result .error")
    assert "no-such-session" in error.inner_text()
    assert error.locator("button.retry").count() == 1
    assert page.input_value("#diff-b") == "no-such-session"  # the inputs stay, to be corrected
    assert page.locator("#diff-path").count() == 1

    other = Server(long_store[0])
    try:
        load(page, other.url + "#/diff", "diff")
    finally:
        other.stop()
    page.click("header nav a[data-view=health]")
    ready(page, "health")
    assert "does not answer" in page.locator("#error").inner_text()
    assert page.locator("#error button.retry").count() == 1
