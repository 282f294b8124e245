"""Helpers of the market tests: the service as a user runs it: `fedops market serve` in its own process on 127.0.0.1
with a real SQLite file, the session's Prefect server, and (for the browser checks) Debian's
chromium driven through chromedriver. Screenshots go to ``test-artifacts/market/``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = Path(os.environ.get("FEDOPS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "market"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MarketService:
    def __init__(self, root: Path, *, runner: bool, env: dict[str, str] | None = None) -> None:
        self.root, self.runner, self.extra_env = root, runner, env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = f"sqlite:///{root / 'market.db'}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1", **self.extra_env}
        log = open(self.root.parent / f"serve-{self.starts}.log", "w")
        args = [str(BIN / "fedops"), "market", "serve", "--root", str(self.root), "--port", str(self.port),
                "--poll", "0.5"] + ([] if self.runner else ["--no-runner"])
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     start_new_session=True)
        self.starts += 1
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/api/v1/tasks", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise AssertionError(self.log_tail())
            time.sleep(0.5)

    def log_tail(self) -> str:
        logs = sorted(self.root.parent.glob("serve-*.log"))
        runner = self.root / "runner.log"
        text = "".join(p.read_text()[-3000:] for p in logs)
        return text + (runner.read_text()[-4000:] if runner.is_file() else "")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()




def chromium_paths() -> tuple[str | None, str | None]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    return browser, shutil.which("chromedriver")


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def absent(driver, by, selector: str) -> bool:
    """True when no element matches, asked without the implicit wait (which would wait it out)."""
    driver.implicitly_wait(0)
    try:
        return not driver.find_elements(by, selector)
    finally:
        driver.implicitly_wait(15)


def url_when(driver, check, *, what: str, timeout: float = 15.0) -> str:
    """The page's URL once ``check(url)`` holds: a click's navigation may not have landed yet
    (the implicit wait covers element lookups, not ``current_url``)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(lambda d: check(d.current_url))
    except TimeoutException:
        raise AssertionError(f"the browser never reached {what} in {timeout:.0f} s: at {driver.current_url}") from None
    return driver.current_url
