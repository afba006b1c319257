"""Browser tests: Playwright drives Debian's Chromium (``/usr/bin/chromium``; Playwright's own
browser downloads are not used) against a real embedded platform started by the e2e
harness, as a customer and as staff would use the web UI.

- ``browser``: one headless Chromium for the session; each test opens its own contexts
  (cookie jars), so a customer and staff can be signed in side by side.
- ``browser_platform``: one embedded platform shared by the browser tests (tests keep out
  of each other's way with their own products); ``platform_factory`` for a private one a
  test restarts.
- ``screenshot(page, name)``: with ``WAYBILL_SCREENSHOTS=1`` writes docs/screenshots/<name>.png
  (the README shows them); otherwise does nothing, so test runs leave the tree clean.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from e2e.conftest import PlatformFactory, _start_shared, demo_data_template  # noqa: F401 (fixture)
from e2e.harness import DEMO_PASSWORD, REPO_DIR, Platform

CHROMIUM = os.environ.get("WAYBILL_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO_DIR / "docs" / "screenshots"
# Bounded waits for what the page shows: an order crosses every context and comes back
# over the socket well within this on a healthy run.
UI_TIMEOUT_MS = 20_000

expect.set_options(timeout=UI_TIMEOUT_MS)


def pytest_collection_modifyitems(items):
    """Every browser test on one xdist worker: they share the browser and the platform. A
    test that names its group (services mode) joins the tests that share its deployment."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
            if item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group("browser"))


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked as running
# in the main thread while it is open, and later tests on the same xdist worker that call
# asyncio.run() (the WebSocket tests) would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM} (bin/ensure-servers installs Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def browser_platform(demo_data_template, tmp_path_factory) -> Iterator[Platform]:  # noqa: F811
    platform = _start_shared(demo_data_template, tmp_path_factory.mktemp("waybill-browser") / "data")
    yield platform
    code = platform.stop()
    assert code == 0, f"the browser tests' platform exited {code} on SIGINT\n{platform.log_tail()}"


@pytest.fixture
def platform_factory(demo_data_template, tmp_path) -> Iterator[PlatformFactory]:  # noqa: F811
    factory = PlatformFactory(demo_data_template, tmp_path)
    yield factory
    problems = factory.stop_all()
    assert not problems, "\n\n".join(problems)


class Browse:
    """Opens signed-in pages: each user in their own browser context (own cookies)."""

    def __init__(self, browser: Browser):
        self.browser = browser
        self.contexts = []
        self.console: list[str] = []

    def page(self, platform: Platform, *, width: int = 1200, height: int = 900) -> Page:
        context = self.browser.new_context(base_url=platform.base_url, viewport={"width": width, "height": height})
        context.set_default_timeout(UI_TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        # Script errors fail nothing by themselves, but explain a failure: kept for the report.
        page.on("console", lambda m: m.type in ("error", "warning") and self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return page

    def sign_in(self, platform: Platform, username: str, path: str = "/", **size) -> Page:
        """Sign in through the login form, as a person would, and land on ``path``."""
        page = self.page(platform, **size)
        page.goto(f"/accounts/login/?next={path}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**{path}")
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def browse(browser, request) -> Iterator[Browse]:
    browse = Browse(browser)
    yield browse
    if browse.console and getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print("browser console:\n" + "\n".join(browse.console))
    browse.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


@pytest.fixture
def screenshot():
    def take(page: Page, name: str, **options) -> None:
        if os.environ.get("WAYBILL_SCREENSHOTS") != "1":
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), **options)

    return take
