"""The web app in headless chromium (selenium, Debian's chromium): a requester publishes a task
through the form (a refused config shows its message, nothing stored), an owner sees its
eligibility and joins with the button, gets a training ID and leaves; text with HTML
metacharacters shows as text, never as markup. Screenshots go to test-artifacts/market/."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml
from market_helpers import absent, screenshot, url_when
from selenium.webdriver.common.by import By
from test_market_api import account, auth, counts, fingerprint

from fedops.market.demo import demo_config, devices


def login(browser, url: str, token: str, next_path: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/login?next={next_path}")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()


def test_publish_join_and_leave_in_the_browser(api_service, browser):
    svc = api_service
    url = svc.url
    config = demo_config(owners=5, rounds=2)
    req = account(svc, "requester", "Lab")
    before = counts(svc)["market_tasks"]
    login(browser, url, req["token"], "/tasks/new")
    url_when(browser, lambda u: u.endswith("/tasks/new"), what="the publishing form")

    def fill(title: str, cfg_text: str) -> None:
        for field, value in (("f-title", title), ("f-min-owners", "2"), ("f-config", cfg_text),
                             ("f-columns", "glucose, age"), ("f-labels", "neg, pos"), ("f-min-samples", "50")):
            el = browser.find_element(By.ID, field)
            el.clear()
            el.send_keys(value)
        browser.find_element(By.ID, "publish").click()

    # a config the training models refuse: the form says why, nothing is stored
    bad = {**config, "client": {"lr": -1}}
    fill("Bad task", yaml.safe_dump(bad))
    errors = browser.find_element(By.ID, "errors").text
    assert "client.lr" in errors, errors
    assert counts(svc)["market_tasks"] == before
    screenshot(browser, "publish-refused")

    title = "Diabetes <b>risk</b> & <script>document.title='owned'</script>"
    fill(title, yaml.safe_dump(config))
    page = url_when(browser, lambda u: "/tasks/" in u and not u.endswith("/new"), what="the new task's page")
    task_id = page.rsplit("/", 1)[1]
    assert browser.find_element(By.ID, "title").text == title  # shown as text
    assert absent(browser, By.CSS_SELECTOR, "#title b") and browser.title == f"{title} · fedops market"
    assert absent(browser, By.TAG_NAME, "script")
    screenshot(browser, "task-published")

    # an owner with a fitting data set sees the join button and joins
    owner = account(svc, "owner", "Owner One", devices(2)[0])
    r = httpx.post(f"{url}/api/v1/me/datasets", json=fingerprint(config, 3), headers=auth(owner))
    assert r.status_code == 201
    login(browser, url, owner["token"], f"/tasks/{task_id}")
    browser.find_element(By.ID, "join").click()
    training_id = browser.find_element(By.ID, "training-id").text
    enrolment = httpx.get(f"{url}/api/v1/enrollments/{training_id}", headers=auth(owner)).json()
    assert enrolment["task_id"] == task_id and enrolment["state"] == "joined"
    screenshot(browser, "owner-joined")
    # the task list marks eligibility for an owner who cannot join (no data set)
    other = account(svc, "owner", "Owner Two", devices(2)[1])
    login(browser, url, other["token"], "/")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#tasks tr") if title in r.text)
    assert "you have registered no data set" in row.text
    screenshot(browser, "task-list")
    # the first owner leaves with the button
    login(browser, url, owner["token"], f"/tasks/{task_id}")
    browser.find_element(By.ID, "leave").click()
    assert browser.find_elements(By.ID, "join")  # the button is back
    assert httpx.get(f"{url}/api/v1/enrollments/{training_id}", headers=auth(owner)).json()["state"] == "left"
    # a bad token at the login form is refused with a message
    login(browser, url, "not-a-token", "/")
    assert "invalid token" in browser.find_element(By.ID, "error").text


def test_the_openapi_page_renders_without_a_network(api_service, browser):
    """/docs (Swagger UI) loads its scripts from the service itself: the browser has no network
    beyond 127.0.0.1 (a dead proxy)."""
    browser.get(f"{api_service.url}/docs")
    deadline = time.time() + 60
    while not browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path") and time.time() < deadline:
        time.sleep(0.5)
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/v1/tasks", "/api/v1/tasks/{task_id}/join", "/api/v1/accounts"} <= paths, sorted(paths)
    screenshot(browser, "openapi")


pytestmark = pytest.mark.slow
