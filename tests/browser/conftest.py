"""What the browser tests run against, each on a free port and stopped at the end: the local
DynamoDB-compatible server with the table (tools/dynamodb_local.py), the scripted model
(tools/scripted_model.py), the function under `cargo lambda watch` with AUTH_MODE=NONE, and
headless Chromium driven by selenium through Debian's /usr/bin/chromedriver.

Run by `make test` (after `cargo test`), or alone: `.venv/bin/python -m pytest tests/browser`.
PAGE_SCREENSHOT=docs/page.png writes the README's screenshot.
"""
import os
import sys
from pathlib import Path

import pytest

# tests/stack.py: the stack start-up shared with tests/responses.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stack import REPO, http, running  # noqa: E402,F401 (REPO and http for the tests)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def stack():
    with running("NONE") as s:
        yield s


@pytest.fixture(scope="module")
def jwt_stack():
    with running("JWT") as s:
        yield s


@pytest.fixture(scope="module")
def iam_stack():
    with running("AWS_IAM") as s:
        yield s


def chromium():
    """A new headless Chromium under selenium; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # A tab sent to the background by another one is not throttled: when the front tab closes,
    # chromedriver can otherwise wait on it until the page load timeout.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--lang=en-US", "--force-device-scale-factor=1",
                "--disable-backgrounding-occluded-windows", "--disable-renderer-backgrounding",
                "--disable-background-timer-throttling"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture(scope="session")
def browser():
    """One browser for every test, in one tab: a test that needs a second tab uses its own
    browser (`chromium()`), since a headless tab left behind can stall later navigations."""
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, print the browser's console and the function's log tail."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        driver = item.funcargs.get("browser")
        stack = next((item.funcargs[k] for k in ("stack", "jwt_stack", "iam_stack") if k in item.funcargs), None)
        extra = []
        if driver is not None:
            try:
                extra.append("browser console:\n" + "\n".join(
                    str(e.get("message")) for e in driver.get_log("browser")))
                extra.append("page:\n" + driver.execute_script(
                    "return location.href + '\\n' + document.body.innerText.slice(0, 1500)"))
            except Exception as e:  # noqa: BLE001 - diagnostics only
                extra.append(f"(no browser log: {e})")
        if stack is not None:
            extra.append("function log tail:\n" + stack.log_tail())
        report.sections.append(("diagnostics", "\n\n".join(extra)))
