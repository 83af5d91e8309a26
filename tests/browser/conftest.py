"""Real-browser fixtures: one headless Debian Chromium per session, a fresh context per test."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR
from tests.prerequisites import missing

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = BASE_DIR / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
INSTALL_HINT = "install it with: sudo apt-get update && sudo apt-get install -y chromium (make test does this as root)"


def chromium_or_skip() -> str:
    """The Chromium binary. Absent: a skip for a user who can't install it, a failure for root (and CI)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    missing(f"{CHROMIUM} is missing; run `bash scripts/test-env.d/chromium.sh` ({INSTALL_HINT})")


# Playwright's sync API runs an event loop in this thread, so Django sees an "async
# context" and would refuse the tests' own ORM calls; the tests never share a connection
# with the event loop, so that guard does not apply here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, live_server) -> Iterator:
    """A page in a fresh browser context (no cookies), with actions failing after 10 s."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1024, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# The README's screenshots, rewritten when the browser tests run with README_SCREENSHOTS=1.
README_IMAGES = BASE_DIR / "docs" / "img"


@pytest.fixture
def screenshot(artifacts: Path) -> Callable[..., Path]:
    """`screenshot(page, "name.png")`: into test-artifacts/, and into docs/img/ with README_SCREENSHOTS=1."""

    def take(page, name: str, **options) -> Path:
        path = artifacts / name
        page.screenshot(path=str(path), full_page=True, **options)
        if os.environ.get("README_SCREENSHOTS") == "1":
            shutil.copyfile(path, README_IMAGES / name)
        return path

    return take

