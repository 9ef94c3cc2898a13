"""Debian's Chromium driven by Selenium through Debian's chromedriver (no browser is
ever downloaded): for the dashboard's browser tests and scripts/dashboard_*.py.

Chromium, chromedriver or the built dashboard missing: the tests are skipped, or fail
when the environment variable CI is set (``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CLOUDAI_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CLOUDAI_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
BUILT_PAGE = Path(__file__).resolve().parents[3] / "src" / "cloudai" / "web" / "index.html"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install -y {package})"
    if not BUILT_PAGE.exists():
        return f"the dashboard is not built ({BUILT_PAGE} is missing: make dashboard)"
    return None


def require_browser() -> None:
    reason = missing_browser()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI is set: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


def new_chromium(profile: Path) -> Any:
    """A headless Chromium with a fresh profile; it accepts the test master's
    self-made certificate and keeps the page's console for the tests to read."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.accept_insecure_certs = True
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
