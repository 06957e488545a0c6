"""What the browser tests run against, each on a free port and stopped at the end: the local
DynamoDB-compatible server with the table (tools/dynamodb_local.py), the scripted model
(tools/scripted_model.py), the function under `cargo lambda watch` with AUTH_MODE=NONE, and
headless Chromium driven by selenium through Debian's /usr/bin/chromedriver.

Run by `make test` (after `cargo test`), or alone: `.venv/bin/python -m pytest tests/browser`.
PAGE_SCREENSHOT=docs/page.png writes the README's screenshot.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# The first request waits for cargo lambda watch's build (warm after `cargo test`).
BUILD_WAIT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Helper:
    """A tools/ helper that prints `PORT <n>` and exits when its stdin closes."""

    def __init__(self, script, *args):
        self.proc = subprocess.Popen(
            [PYTHON, str(REPO / "tools" / script), "--port", "0", "--exit-with-stdin", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{script} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)


def stop_group(proc):
    """Ends a process started in its own session and everything it started."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def http(method, url, body=None, headers=None, timeout=30):
    """(status, headers, body bytes) of one request; HTTP errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Stack:
    def __init__(self, url, model, log):
        self.url, self.model, self.log = url, model, log

    def api(self, method, path, body=None, headers=None):
        status, _, data = http(method, self.url + path, body, headers)
        return status, (json.loads(data) if data else None)

    def script(self, *steps):
        """Queues behaviour for the scripted model's next calls (see tools/scripted_model.py)."""
        status, _, _ = http("POST", self.model.url + "/_script", {"steps": list(steps)})
        assert status == 200

    def model_calls(self):
        return json.loads(http("GET", self.model.url + "/_requests")[2])


@contextlib.contextmanager
def running(auth_mode):
    """The local table, the scripted model and `cargo lambda watch` with AUTH_MODE=auth_mode."""
    work = Path(tempfile.mkdtemp(prefix="browser-test-"))
    table = "sessions"
    ddb = Helper("dynamodb_local.py", "--table", table)
    model = Helper("scripted_model.py")
    port = free_port()
    env = dict(os.environ)
    env.pop("AWS_ENDPOINT_URL", None)  # cargo lambda would follow it for its own runtime client
    env.update({
        "PATH": f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
        "AUTH_MODE": auth_mode,
        # Answer in Lambda's streaming format, as behind the streaming API (and `make watch`).
        "INVOKE_MODE": "RESPONSE_STREAM",
        "TABLE_NAME": table,
        "OWNER_INDEX": "by_owner",
        "OPENAI_BASE_URL": model.url + "/v1",
        "MODEL_ID": "scripted",
        "AWS_ENDPOINT_URL_DYNAMODB": ddb.url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_EC2_METADATA_DISABLED": "true",
        "RUST_LOG": "info",
    })
    log_path = work / "watch.log"
    log = open(log_path, "w")
    watch = subprocess.Popen(
        ["cargo", "lambda", "watch", "--ignore-changes", "--quiet",
         "--invoke-address", "127.0.0.1", "--invoke-port", str(port), "--bin", "session-chat"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + BUILD_WAIT_S
        while True:
            try:
                status, _, _ = http("GET", url + "/", timeout=BUILD_WAIT_S)
                if status == 200:
                    break
            except OSError:
                pass
            if watch.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("cargo lambda watch did not serve the page:\n" + log_path.read_text()[-3000:])
            time.sleep(0.25)
        yield Stack(url, model, log_path)
    finally:
        stop_group(watch)
        log.close()
        model.stop()
        ddb.stop()


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
            extra.append("function log tail:\n" + stack.log.read_text()[-2000:])
        report.sections.append(("diagnostics", "\n\n".join(extra)))
