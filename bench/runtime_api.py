"""A local AWS Lambda Runtime API (2018-06-01) for one function process, used in-process by bench.py.

    api = RuntimeApi()                       # listens on 127.0.0.1:<free port>
    env["AWS_LAMBDA_RUNTIME_API"] = api.address
    ... spawn the function ...
    api.wait_ready(proc)                     # blocks until its first GET .../invocation/next
    inv = api.invoke(event)                  # queues the event, waits for its response or error
    inv.handed_at, inv.done_at, inv.body     # monotonic seconds, the raw response bytes
    api.close()

Endpoints: GET /2018-06-01/runtime/invocation/next (long poll; headers Lambda-Runtime-Aws-Request-Id,
-Deadline-Ms, -Invoked-Function-Arn, -Trace-Id), POST .../invocation/{id}/response and
.../invocation/{id}/error, POST /2018-06-01/runtime/init/error.

A response sent in Lambda's streaming mode (`Lambda-Runtime-Function-Response-Mode: streaming`,
chunked) is read as it arrives: `inv.prelude` is its metadata (status, headers), `inv.body` the
bytes after the 8-NUL delimiter, and `inv.chunks` each piece of those with its arrival time.

Use one RuntimeApi per function process: a long poll left behind by a killed process could
otherwise take the next process's event.
"""
import json
import queue
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:bench"
DEADLINE_MS = 30_000


class Invocation:
    def __init__(self, event: dict):
        self.id = uuid.uuid4().hex
        self.event = json.dumps(event).encode()
        self.handed_at = None  # when the event was written to the function (monotonic s)
        self.done_at = None  # when its response or error arrived
        self.body = None
        self.error = False
        self.done = threading.Event()
        self.prelude = None  # streamed: the metadata prelude, as JSON
        self.chunks = []  # streamed: (monotonic s, bytes) of the body as it arrived

    @property
    def seconds(self) -> float:
        return self.done_at - self.handed_at


class RuntimeApi:
    def __init__(self, host: str = "127.0.0.1"):
        self.queue = queue.Queue()
        self.invocations = {}
        self.first_next_at = None  # the process's first /next: its init is done
        self.init_error = None
        self.ready = threading.Event()
        self.closing = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall between headers and body

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self):
                if self.path != PREFIX + "/invocation/next":
                    return self.reply(404, b'{"errorMessage":"not found"}')
                if api.first_next_at is None:
                    api.first_next_at = time.monotonic()
                    api.ready.set()
                while True:
                    if api.closing:
                        return self.reply(410, b"{}")
                    try:
                        inv = api.queue.get(timeout=0.2)
                        break
                    except queue.Empty:
                        continue
                deadline = int(time.time() * 1000) + DEADLINE_MS
                headers = [("Lambda-Runtime-Aws-Request-Id", inv.id),
                           ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                           ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN),
                           ("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{inv.id[:24]};Sampled=0")]
                inv.handed_at = time.monotonic()  # before the write: the answer may beat it back
                self.reply(200, inv.event, headers)

            def read_streamed(self, inv):
                """A chunked, streamed response: metadata, 8 NULs, then the body."""
                raw = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers (a mid-stream error would be here)
                        break
                    data = self.rfile.read(size)
                    self.rfile.readline()
                    now = time.monotonic()
                    if inv.prelude is None:
                        raw += data
                        if b"\0" * 8 in raw:
                            meta, data = raw.split(b"\0" * 8, 1)
                            inv.prelude = json.loads(meta)
                        else:
                            continue
                    if data:
                        inv.chunks.append((now, data))
                return b"".join(c for _, c in inv.chunks)

            def do_POST(self):
                m = re.fullmatch(PREFIX + r"/invocation/([^/]+)/(response|error)", self.path)
                inv = api.invocations.get(m.group(1)) if m else None
                streamed = (self.headers.get("Lambda-Runtime-Function-Response-Mode") == "streaming"
                            and self.headers.get("Transfer-Encoding") == "chunked")
                if streamed and inv is not None:
                    body = self.read_streamed(inv)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.monotonic()
                if self.path == PREFIX + "/init/error":
                    api.init_error = body.decode(errors="replace")
                    api.ready.set()
                    return self.reply(202, b'{"status":"OK"}')
                if inv is None:
                    return self.reply(404, b'{"errorMessage":"unknown request id"}')
                inv.done_at, inv.body, inv.error = now, body, m.group(2) == "error"
                inv.done.set()
                self.reply(202, b'{"status":"OK"}')

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        # A function killed mid long-poll leaves a closed socket behind: not worth a traceback.
        self.server.handle_error = lambda request, address: None
        self.address = f"{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_ready(self, proc, timeout: float = 120.0) -> float:
        """Waits for the process's first /next; returns its monotonic time. Raises if the
        process exits, reports an init error, or does not poll within `timeout`."""
        end = time.monotonic() + timeout
        while not self.ready.wait(0.01):
            if proc.poll() is not None:
                raise RuntimeError(f"the function exited during init (status {proc.returncode})")
            if time.monotonic() > end:
                raise RuntimeError("the function did not poll for an event in time")
        if self.init_error is not None:
            raise RuntimeError(f"init error: {self.init_error}")
        return self.first_next_at

    def invoke(self, event: dict, timeout: float = 60.0) -> Invocation:
        inv = Invocation(event)
        self.invocations[inv.id] = inv
        self.queue.put(inv)
        if not inv.done.wait(timeout):
            raise RuntimeError("the function did not answer in time")
        return inv

    def close(self):
        self.closing = True
        self.server.shutdown()
        self.server.server_close()
