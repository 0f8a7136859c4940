"""A real headless Chromium (Debian's chromium + chromium-driver) driven through Selenium."""

from __future__ import annotations

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def start_browser(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A fresh headless Chromium with its own empty profile (quit it when done).

    --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser():
    """A headless Chromium for one test."""
    driver = start_browser()
    yield driver
    driver.quit()
