"""Debian's chromium, headless and phone-sized, driven through chromium-driver by selenium: how the tests look at
the status page as a person does."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver, installed by integration/setup.sh
PHONE = (412, 915)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={PHONE[0]},{PHONE[1]}",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def rows(browser: WebDriver, css: str) -> list[list[str]]:
    """Each row's cells as the page shows them now, read in one go: the page redraws itself every 2 s."""
    return list(browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r => [...r.cells].map(c => c.innerText))", css))


def fits(browser: WebDriver) -> bool:
    """Whether the page reads without scrolling sideways."""
    return bool(browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))
