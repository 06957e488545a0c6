"""What the Responses API tests run against (tests/stack.py): the local table, the scripted
model and the function under `cargo lambda watch` with AUTH_MODE=NONE, in Lambda's streaming
format, with up to 4 instances at once (`--concurrency 4`, so simultaneous turns race as they
do on Lambda); and the real `openai` client pointed at its `/v1`.

Run by `make test`, or alone: `.venv/bin/python -m pytest -q tests/responses`.
"""
import sys
from pathlib import Path

import openai
import pytest

# tests/stack.py: the stack start-up shared with tests/browser.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stack import running  # noqa: E402

INSTANCES = 4


@pytest.fixture(scope="session")
def stack():
    with running("NONE", name="responses", watch_args=("--concurrency", str(INSTANCES))) as s:
        yield s


@pytest.fixture(scope="session")
def make_client(stack):
    """Makes an openai client on the stack's /v1 (keyword arguments as openai.OpenAI's). No
    retries unless asked: a test sees each answer the server gave (the client would otherwise
    retry 5xx, 408, 409 and 429 by itself)."""
    def make(**options):
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 60)
        return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="local", **options)
    return make


@pytest.fixture(scope="session")
def client(make_client):
    c = make_client()
    try:
        yield c
    finally:
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, print the function's log tail."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "stack" in item.funcargs:
        report.sections.append(("function log tail", item.funcargs["stack"].log_tail(3000)))
