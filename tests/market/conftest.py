"""Fixtures of the market tests (helpers in market_helpers.py)."""

from __future__ import annotations

import os

import pytest
from market_helpers import ARTIFACTS, MarketService, chromium_paths


@pytest.fixture(scope="module")
def api_service(tmp_path_factory, prefect_api):
    """A service without a runner: enough for the API, access and input checks (nothing starts)."""
    root = tmp_path_factory.mktemp("market-api") / "market"
    svc = MarketService(root, runner=False)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def browser():
    """Headless chromium through selenium; in CI a missing browser fails the test (scripts/test.sh
    installs Debian's chromium and chromium-driver)."""
    chrome, driver = chromium_paths()
    if chrome is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed for the market's browser checks")
        pytest.skip("no chromium/chromedriver here (scripts/test.sh installs Debian's)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1800", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(60)
    drv.implicitly_wait(15)  # a lookup right after a click waits for the next page (see market_helpers.absent)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield drv
    drv.quit()

