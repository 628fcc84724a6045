"""castate ui end to end: `castate ui` serves a real store in a subprocess, and Debian's
chromium, driven by Playwright, looks at each view and saves a screenshot of it (to docs/img/, which
docs/ui.md shows, when CASTATE_UI_SCREENSHOTS=docs)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

import castate
from tests.ui_support import Server, build

CHROMIUM = "/usr/bin/chromium"  # Debian's package (tools/test.sh installs it); Playwright downloads nothing
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
# Every run saves its screenshots; they replace the ones docs/ui.md shows only when asked
# (CASTATE_UI_SCREENSHOTS=docs), so running the suite does not touch the work tree.
IMG = (
    DOCS_IMG if os.environ.get("CASTATE_UI_SCREENSHOTS") == "docs" else Path(tempfile.gettempdir()) / "castate-ui-shots"
)
VIEWPORT = {"width": 1280, "height": 800}


def in_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn`` in a thread of its own: Playwright's sync API keeps an event loop running in this one."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn(*args))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("ui") / "state"
    return path, in_thread(build, path)


@pytest.fixture(scope="module")
def server(store: tuple[Path, dict[str, Any]]) -> Iterator[Server]:
    s = Server(store[0])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    p.close()
    assert not errors, errors  # no script errors on any view


def visit(page: Page, server: Server, hash_: str, view: str) -> None:
    page.goto(server.url + hash_)
    page.wait_for_selector(f"main[data-view={view}][data-ready]")
    assert page.locator("#error").count() == 0, page.locator("#error").inner_text()


def shoot(page: Page, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / f"ui-{name}.png"))


def test_sessions_table_lists_sorts_and_searches(page: Page, server: Server, store: tuple[Path, dict]) -> None:
    saves = store[1]["saves"]
    visit(page, server, "#/", "sessions")
    rows = page.locator("tr.session-row")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.session)")) == sorted(saves)
    cells = page.locator("tr.session-row td:nth-child(4)")
    page.click("th[data-key=saves]")  # most saves first
    assert [int(t) for t in cells.all_inner_texts()] == sorted(saves.values(), reverse=True)
    page.click("th[data-key=saves]")
    assert [int(t) for t in cells.all_inner_texts()] == sorted(saves.values())
    shoot(page, "sessions")
    page.fill("#search", "retry")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.session)") == ["research-42-retry"]


def test_timeline_lists_every_save_with_its_marks(page: Page, server: Server, store: tuple[Path, dict]) -> None:
    visit(page, server, "#/session?id=research-42", "session")
    canvas = page.locator("canvas#timeline")
    assert canvas.get_attribute("data-lo") == "0"
    assert canvas.get_attribute("data-hi") == "12"
    assert int(canvas.get_attribute("data-columns") or 0) == 12  # one column per save when they fit
    rows = page.locator("tr.save-row")
    assert rows.count() == 12
    assert page.locator("tr.save-row .badge.cp").count() == 2
    assert "forked to research-42-retry" in page.locator("tr.save-row .badge.mark").all_inner_texts()
    rows.nth(4).click()
    assert "Save 5 of 12" in page.locator("#point-details").inner_text()
    assert "before_tool_call" in page.locator("#point-details").inner_text()
    assert "save=5" in page.url  # the selection is part of the address
    shoot(page, "timeline")
    visit(page, server, "#/session?id=research-42-retry", "session")
    assert page.locator("tr.save-row").count() == 12
    assert page.locator("tr.save-row.inherited").count() == 9  # saved by research-42 before the fork


def test_diff_between_checkpoints_shows_the_added_messages(
    page: Page, server: Server, store: tuple[Path, dict]
) -> None:
    info = store[1]
    a, b = info["checkpoints"][4], info["checkpoints"][8]
    visit(page, server, f"#/diff?a={a}&b={b}", "diff")
    first, last = info["messages_at"][4], info["messages_at"][8]
    group = page.locator("#changes > li.change-group")  # the appended messages, as one group
    assert group.get_attribute("data-path") == "/messages"
    assert group.get_attribute("data-count") == str(last - first)
    assert f"+{last - first} items" in group.inner_text()
    assert "appended to" in group.inner_text()
    group.locator("button.fold").click()
    added_paths = group.locator(".change-add").evaluate_all("cs => cs.map(c => c.dataset.path)")
    assert added_paths == [f"/messages/{i}" for i in range(first, last)]
    assert info["last_messages"][first]["content"] in group.locator(".change-add").nth(0).inner_text()
    assert "replaced" in page.locator("#diff-summary").inner_text()
    scratch = page.locator("li.change-replace[data-path='/scratchpad'] .textdiff")  # a string: its words
    assert scratch.locator("ins").count() >= 1
    shoot(page, "diff")


def test_tree_opens_a_large_state_level_by_level(page: Page, server: Server, store: tuple[Path, dict]) -> None:
    visit(page, server, "#/tree?rev=nightly-etl", "tree")
    report = page.locator("#tree > li[data-path='/report']")
    assert "str · " in report.inner_text()
    assert "show all" in report.inner_text()  # folded: only its first chunk was read
    page.click("#tree > li[data-path='/rows'] > .toggle")
    rows = page.locator("#tree > li[data-path='/rows'] > ul > li.node")
    rows.nth(199).wait_for()
    assert rows.count() == 200
    page.click("#tree > li[data-path='/rows'] button.more")
    rows.nth(399).wait_for()
    assert rows.count() == 400
    page.click("#tree li[data-path='/rows/0'] > .toggle")
    page.locator("#tree li[data-path='/rows/0/region']").wait_for()
    assert '"north"' in page.locator("#tree li[data-path='/rows/0/region']").inner_text()
    shoot(page, "tree")


def test_health_shows_sizes_and_the_last_runs(page: Page, server: Server) -> None:
    visit(page, server, "#/health", "health")
    assert page.locator("#runs tr.run-row").count() == 3
    assert "ok" in page.locator("#last-fsck").inner_text()
    assert "full check" in page.locator("#last-fsck").inner_text()
    assert "deleted" in page.locator("#last-gc").inner_text()
    assert page.locator("#health-chart .h-point").count() >= 5  # on disk at 3 runs and now, logical at 2 fsck and now
    shoot(page, "health")


def test_write_actions_are_absent_when_read_only(page: Page, server: Server) -> None:
    visit(page, server, "#/session?id=research-42", "session")
    assert page.locator("#mode").inner_text() == "read-only"
    for selector in ("#actions", "#do-fork", "#do-restore", "#do-checkpoint"):
        assert page.locator(selector).count() == 0
    status = page.evaluate(
        """async () => (await fetch('/api/actions/fork', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({source: 'research-42', new_session: 'x'})})).status"""
    )
    assert status == 404


def test_write_actions_work_with_allow_writes(page: Page, store: tuple[Path, dict], tmp_path: Path) -> None:
    copy = tmp_path / "state"
    shutil.copytree(store[0], copy)
    server = Server(copy, "--allow-writes")
    try:
        visit(page, server, "#/session?id=research-42", "session")
        assert page.locator("#mode").inner_text() == "writes allowed"
        page.locator("tr.save-row").nth(2).click()
        page.fill("#fork-name", "research-42-from-ui")
        page.click("#do-fork")
        assert "Create session “research-42-from-ui” at save 3" in page.locator("#confirm").inner_text()
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.ok")
        assert "Forked session research-42-from-ui" in page.locator("#action-result").inner_text()
        page.locator("#action-result").scroll_into_view_if_needed()
        shoot(page, "actions")
        page.click("#undo-fork")  # asks first, then deletes the fork it made
        assert "Delete session “research-42-from-ui” again?" in page.locator("#confirm").inner_text()
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.ok >> text=Undone: session research-42-from-ui deleted")
        page.locator("tr.save-row").nth(2).click()
        page.fill("#fork-name", "research-42-from-ui")
        page.click("#do-fork")
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.ok >> text=Forked session research-42-from-ui")
        page.fill("#checkpoint-name", "looked_at_in_ui")
        page.click("#do-checkpoint")
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.ok >> text=Created checkpoint")
        page.locator("tr.save-row").nth(5).click()
        page.click("#do-restore")
        page.click("#confirm-no")  # nothing happens without the confirmation
        assert page.locator("#confirm").count() == 0
        page.click("#do-restore")
        page.click("#confirm-yes")
        page.wait_for_selector("#action-result.ok >> text=is now at")
        assert page.locator("#undo").count() == 1
    finally:
        server.stop()

    async def check() -> None:
        async with castate.StateManager(castate.FileStorageBackend(copy)) as sm:
            log = await sm.repository.log("sessions/research-42")
            fork = await sm.resolve("research-42-from-ui")
            assert fork.commit == log[-3][0]  # the third save
            moves = [e.message for e in await sm.repository.reflog("sessions/research-42-from-ui")]
            assert moves[:2] == [moves[2], "undo fork research-42-from-ui"]  # forked, undone, forked again
            newest = (await sm.list_checkpoints("research-42"))[0]
            assert newest.name == "looked_at_in_ui"
            assert (await sm.resolve("research-42")).commit == log[-6][0]  # restored to the sixth save

    in_thread(asyncio.run, check())
