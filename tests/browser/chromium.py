"""Headless Chromium from Debian's packages, driven by Playwright: where it is, how it starts, and
one console tab. Without Chromium or Playwright the browser tests skip locally with the reason, and
FAIL in CI (`CI` or SEGFLOW_TEST_POSTGRES_DSN set): CI must never pass by skipping the browser."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.fixtures.database import postgres_dsn
from tests.fixtures.segflow import TENANT_KEYS

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Error, Page

CHROMIUM = Path(os.environ.get("SEGFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
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
VIEWPORT = {"width": 1280, "height": 900}


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") or postgres_dsn():
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason, allow_module_level=True)


def playwright_expect() -> Any:
    """Playwright's `expect`, for test modules to import at collection (skips or fails as above)."""
    try:
        from playwright.async_api import expect
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[test]'")
    return expect


@dataclass
class ConsoleTab:
    """One browser tab on segflow's console; remembers script errors and CSP refusals."""

    page: Page
    base_url: str
    problems: list[str] = field(default_factory=list)

    async def sign_in(self, tenant: str = "acme", view: str = "#/", *, key: str | None = None) -> None:
        """Open the console at `view` and enter the tenant's API key in the sign-in form."""
        await self.page.goto(f"{self.base_url}/console{view}")
        await self.page.get_by_label("API key").fill(key if key is not None else TENANT_KEYS[tenant])
        await self.page.get_by_role("button", name="Open console").click()

    async def show(self, view: str) -> None:
        """Go to another view of the console (the key stays in the tab's session)."""
        await self.page.evaluate("view => { location.hash = view; }", view)

    def noted(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or (message.type == "error" and "Refused" in message.text):
            self.problems.append(message.text)

    def crashed(self, error: Error) -> None:
        self.problems.append(f"uncaught: {error}")


OpenConsole = Callable[[str], Awaitable[ConsoleTab]]
