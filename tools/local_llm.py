#!/usr/bin/env python3
"""A real small LLM, locally: llama.cpp's llama-server with SmolLM2-135M-Instruct (`make llm`
installs both, tools/llm/install.sh), behind a recording proxy.

    local_llm.py [--port N] [--exit-with-stdin] [--upstream URL]
                 [--ctx 8192] [--parallel 2] [--threads 2] [--n-predict N] [--temp T]
                 [--server-log FILE] [--engine-arg ARG ...] [--fold-engine]

Without --upstream it starts llama-server (the installed, pinned binary and the checksummed GGUF
named by tools/llm/paths.sh) on a free port, waits until it is ready, and proxies to it; with
--upstream it only proxies to a llama-server already running (so tests share one engine and
each records its own requests). When ready it prints `PORT <n>` (the proxy's port; the only line
it prints). It exits, with the llama-server it started, when its
stdin closes (--exit-with-stdin) or on SIGTERM/SIGINT; the engine also gets SIGTERM if this
process dies.

Sampling defaults are the engine's for requests that set none (session-chat sends no
temperature and no max_tokens): --temp 0 (greedy, so a fixed prompt gets a fixed answer) and
--n-predict (128 tokens) as the reply's limit.

The proxy passes every request and answer through unchanged (streamed answers event by event)
and records each chat request: GET /_requests returns them in order, each with
    body          the request as sent (messages, stream, prompt_cache_key, ...)
    received_at   time.monotonic() when it came; first_token_at (the first content delta of a
                  streamed answer) and done_at (its end)
    status        the engine's HTTP status
    reply         the answer's text
    usage         the engine's usage (prompt_tokens, completion_tokens,
                  prompt_tokens_details.cached_tokens)
    timings       llama.cpp's own report: cache_n (prompt tokens reused from its KV cache),
                  prompt_n (prompt tokens it processed), prompt_ms, predicted_n, predicted_ms
    summary       true for session-chat's running-summary requests
With --fold-engine, session-chat's running-summary requests go to a second llama-server of their
own (one slot), as a provider serves concurrent requests on separate capacity: on one engine a
fold and a reply share its batches, and the reply's first token waits for the fold's prompt.
GET /_info returns the model file, its sha256 and the engines' URLs.
"""
import argparse
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ROOT / "tools" / "llm" / "paths.sh"
MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1, llama.cpp)"
SUMMARY_MARK = "running summary"  # in session-chat's summary instruction (src/chat/prompt.rs)


def installed() -> dict:
    """The variables of tools/llm/paths.sh (LLAMA_SERVER, LLM_MODEL, LLM_MODEL_SHA256, ...)."""
    out = subprocess.run(["bash", "-c", f'set -a && . "{PATHS}" && env'], capture_output=True, text=True,
                         check=True).stdout
    return {k: v for k, _, v in (line.partition("=") for line in out.splitlines())
            if k.startswith(("LLM_", "LLAMA_"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """In the engine's process: SIGTERM when this launcher dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def start_engine(args, paths, parallel=None, log_suffix="") -> tuple:
    server, model = paths["LLAMA_SERVER"], paths["LLM_MODEL"]
    missing = [p for p in (server, model) if not os.path.exists(p)]
    if missing:
        sys.exit(f"local_llm.py: the local model is not installed ({', '.join(missing)} missing): "
                 "run `make llm`")
    port = free_port()
    cmd = [server, "-m", model, "--host", "127.0.0.1", "--port", str(port),
           "-c", str(args.ctx), "-np", str(parallel or args.parallel), "-t", str(args.threads),
           "--temp", str(args.temp), "-n", str(args.n_predict), "--seed", "1",
           "--no-webui", "--metrics"] + args.engine_arg
    log = open(args.server_log + log_suffix, "ab") if args.server_log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"local_llm.py: llama-server exited with {proc.returncode}"
                     + (f" (log: {args.server_log})" if args.server_log else ""))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("local_llm.py: llama-server was not ready within 120 s")


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []

    def add(self, record):
        with self.lock:
            self.requests.append(record)

    def all(self):
        with self.lock:
            return json.loads(json.dumps(self.requests))


def is_summary(body) -> bool:
    for m in body.get("messages") or []:
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        if m.get("role") == "system" and SUMMARY_MARK in text:
            return True
    return False


def make_handler(upstream: str, recorder: Recorder, info: dict, fold_upstream=None):
    target = urllib.parse.urlsplit(upstream)
    fold_target = urllib.parse.urlsplit(fold_upstream or upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def send_json(self, status, value):
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/_requests":
                return self.send_json(200, recorder.all())
            if self.path == "/_info":
                return self.send_json(200, info)
            self.forward(None)

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            self.forward(self.rfile.read(length))

        def chunk(self, data: bytes):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def forward(self, raw):
            received = time.monotonic()
            body = None
            if raw is not None and self.path.rstrip("/").endswith("chat/completions"):
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
            to = fold_target if body is not None and is_summary(body) else target
            conn = http.client.HTTPConnection(to.hostname, to.port, timeout=600)
            headers = {"content-type": self.headers.get("content-type", "application/json")}
            try:
                conn.request(self.command, self.path, body=raw, headers=headers)
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                resp = conn.getresponse()
            except OSError as e:
                return self.send_json(502, {"error": {"message": f"llama-server: {e}"}})
            record = {"path": self.path, "body": body, "received_at": received,
                      "status": resp.status, "summary": body is not None and is_summary(body)}
            ctype = resp.getheader("content-type", "")
            if "text/event-stream" in ctype:
                self.send_response(resp.status)
                self.send_header("content-type", ctype)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                text, event = [], b""
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    event += line
                    if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                        self.note(record, line[6:], text)
                    if line in (b"\n", b"\r\n"):
                        self.chunk(event)
                        event = b""
                if event:
                    self.chunk(event)
                self.wfile.write(b"0\r\n\r\n")
                record["reply"] = "".join(text)
            else:
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("content-type", ctype or "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                try:
                    answer = json.loads(data)
                    record["usage"] = answer.get("usage")
                    record["timings"] = answer.get("timings")
                    choices = answer.get("choices") or [{}]
                    record["reply"] = (choices[0].get("message") or {}).get("content")
                except (ValueError, AttributeError):
                    pass
            conn.close()
            record["done_at"] = time.monotonic()
            if body is not None:
                recorder.add(record)

        @staticmethod
        def note(record, data: bytes, text: list):
            try:
                event = json.loads(data)
            except ValueError:
                return
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    record.setdefault("first_token_at", time.monotonic())
                    text.append(piece)
            if event.get("usage"):
                record["usage"] = event["usage"]
            if event.get("timings"):
                record["timings"] = event["timings"]

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--exit-with-stdin", action="store_true")
    p.add_argument("--upstream", help="a running llama-server to proxy to (none started)")
    p.add_argument("--ctx", type=int, default=8192, help="the engine's context (all slots)")
    p.add_argument("--parallel", type=int, default=2, help="the engine's slots")
    p.add_argument("--threads", type=int, default=1,
                   help="the engine's threads (1: on a shared 2-core machine, 2 ran 15x slower)")
    p.add_argument("--n-predict", type=int, default=128, help="reply tokens when a request sets none")
    p.add_argument("--temp", type=float, default=0.0, help="temperature when a request sets none")
    p.add_argument("--server-log", help="append llama-server's output to this file")
    p.add_argument("--engine-arg", action="append", default=[],
                   help="one more llama-server argument (repeat it; e.g. --engine-arg=-b --engine-arg=256)")
    p.add_argument("--fold-engine", action="store_true",
                   help="a second llama-server (one slot) for session-chat's running-summary requests")
    args = p.parse_args()

    paths = installed()
    engines, fold_upstream = [], None
    if args.upstream:
        upstream = args.upstream.rstrip("/")
    else:
        engine, upstream = start_engine(args, paths)
        engines.append(engine)
        if args.fold_engine:
            engine, fold_upstream = start_engine(args, paths, parallel=1, log_suffix=".fold")
            engines.append(engine)

    def stop(*_):
        for engine in engines:
            if engine.poll() is None:
                engine.terminate()
                try:
                    engine.wait(5)
                except subprocess.TimeoutExpired:
                    engine.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    info = {"model": MODEL_NAME, "model_file": paths.get("LLM_MODEL"),
            "model_sha256": paths.get("LLM_MODEL_SHA256"),
            "server_package": paths.get("LLM_SERVER_PACKAGE"), "upstream": upstream,
            "fold_upstream": fold_upstream}
    server = ThreadingHTTPServer((args.host, args.port), make_handler(upstream, Recorder(), info,
                                                                        fold_upstream))
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    if args.exit_with_stdin:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sys.stdin.read()
        stop()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
