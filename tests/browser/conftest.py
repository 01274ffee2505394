"""The console in a real browser (see chromium.py), against segflow and the sandbox on loopback:
the `sandbox` and `segflow` fixtures of tests/fixtures, plus a browser and its tabs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, ConsoleTab, OpenConsole, unavailable

if TYPE_CHECKING:
    from playwright.async_api import Browser


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The console reads through the API, whose store is tested on both databases elsewhere: the
    browser tests run on SQLite only (they are the slowest tests, on machines with few cores)."""
    return f"sqlite:///{tmp_path / 'segflow.db'}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[test]'")
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not found: apt-get install -y chromium chromium-driver")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def console(browser: Browser) -> AsyncIterator[OpenConsole]:
    """A factory: `await console(segflow_url)` opens a fresh tab (its own session storage)."""
    contexts: list[Any] = []
    tabs: list[ConsoleTab] = []

    async def open_tab(base_url: str) -> ConsoleTab:
        context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(10_000)
        contexts.append(context)
        tab = ConsoleTab(await context.new_page(), base_url)
        tab.page.on("console", tab.noted)
        tab.page.on("pageerror", tab.crashed)
        tabs.append(tab)
        return tab

    try:
        yield open_tab
    finally:
        for context in contexts:
            await context.close()
    for tab in tabs:
        assert tab.problems == [], f"the console logged problems: {tab.problems}"
