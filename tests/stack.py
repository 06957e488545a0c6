"""The local stack the Python tests drive (tests/browser, tests/responses), each part on a free
port and stopped at the end: the local DynamoDB-compatible server with the table
(tools/dynamodb_local.py), the scripted model (tools/scripted_model.py), and the function under
`cargo lambda watch`, answering in Lambda's streaming format (INVOKE_MODE=RESPONSE_STREAM).

    from stack import running
    with running("NONE") as s:          # AUTH_MODE
        s.api("POST", "/chat", {...})    # (status, parsed JSON)
        s.script({"status": 500})        # the scripted model's next behaviour
        s.model_calls()                  # what the model was sent
        s.table_items()                  # every item of the session table

A conftest puts this folder on sys.path to import it.
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

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
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
    def __init__(self, url, model, log, ddb=None, table=None):
        self.url, self.model, self.log = url, model, log
        self.ddb, self.table = ddb, table

    def api(self, method, path, body=None, headers=None):
        status, _, data = http(method, self.url + path, body, headers)
        return status, (json.loads(data) if data else None)

    def script(self, *steps):
        """Queues behaviour for the scripted model's next calls (see tools/scripted_model.py)."""
        status, _, _ = http("POST", self.model.url + "/_script", {"steps": list(steps)})
        assert status == 200

    def model_calls(self):
        return json.loads(http("GET", self.model.url + "/_requests")[2])

    def table_items(self):
        """Every item of the session table, sorted by key (a scan of the local table)."""
        import boto3

        client = boto3.client("dynamodb", endpoint_url=self.ddb.url, region_name="us-east-1",
                              aws_access_key_id="local", aws_secret_access_key="local")
        items = []
        for page in client.get_paginator("scan").paginate(TableName=self.table, ConsistentRead=True):
            items.extend(page["Items"])
        return sorted(items, key=lambda item: json.dumps(item.get("id"), sort_keys=True))

    def log_tail(self, chars=2000):
        """The end of the function's log (cargo lambda watch's output)."""
        return self.log.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def running(auth_mode, *, name="browser", env=None, watch_args=()):
    """The local table, the scripted model and `cargo lambda watch` with AUTH_MODE=auth_mode.
    `env` adds variables for the function; `watch_args` are more options for `cargo lambda
    watch` (e.g. `--concurrency 4`); `name` prefixes the temporary folder of the log."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-test-"))
    table = "sessions"
    ddb = Helper("dynamodb_local.py", "--table", table)
    model = Helper("scripted_model.py")
    port = free_port()
    environ = dict(os.environ)
    environ.pop("AWS_ENDPOINT_URL", None)  # cargo lambda would follow it for its own runtime client
    environ.update({
        "PATH": f"{REPO / '.venv' / 'bin'}:{environ.get('PATH', '')}",
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
    environ.update(env or {})
    log_path = work / "watch.log"
    log = open(log_path, "w")
    watch = subprocess.Popen(
        ["cargo", "lambda", "watch", "--ignore-changes", "--quiet",
         "--invoke-address", "127.0.0.1", "--invoke-port", str(port), *watch_args,
         "--bin", "session-chat"],
        cwd=REPO, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
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
        yield Stack(url, model, log_path, ddb, table)
    finally:
        stop_group(watch)
        log.close()
        model.stop()
        ddb.stop()
