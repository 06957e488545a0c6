#!/usr/bin/env python3
"""`make bench`: session-chat against its floors and the Python original, on this machine.

Builds (release, CARGO_TARGET_DIR=target/bench) session-chat, the hello-world lambda_http floor and
the I/O floor (bench/hello/), and the arm64 `bootstrap` with cargo lambda. Starts the local
DynamoDB-compatible server and the scripted model, then for each function -- hello, session-chat,
and griptape's recipe under awslambdaric (bench/original/) -- runs several cold starts, each a
fresh process against a fresh local Lambda Runtime API (runtime_api.py), one fresh session each:

  init          spawn -> the process's first GET .../invocation/next
  first invoke  event handed out -> its response (turn 1)
  warm          the same for turns 2..N+1 (the session grows turn by turn)
  peak RSS      VmHWM of the process after its last turn

plus the I/O floor's turns (the same messages), and the prompt tokens sent per turn over one long
conversation for session-chat and griptape (characters / 4 of every message the scripted model
received; a fresh scripted model for each). Prints a table with the targets, and writes
bench/results.json and bench/bench.png. Stops everything it starts.

Streamed turns (`Accept: text/event-stream`, the scripted model's first word after 0.2 s, then a
word every 20 ms), two ways: through the Runtime API in Lambda's streaming protocol
(INVOKE_MODE=RESPONSE_STREAM), and over HTTP through `cargo lambda watch --release`; both run the
same release binary. For each turn, from the monotonic clocks of the scripted
model, the Runtime API or HTTP client, and the function's log line (load_ms, save_ms):

  first         the client's time to its first `delta` over the model's own time to its first
                word (both from their request), less the session load: goal <= 5 ms
  done          from the model's last word to the client's `done` event, less the save:
                goal <= 5 ms

The Responses API against POST /chat (`responses` in results.json): one function process, three
sessions, the same 300-character messages turn by turn, a turn of each way in turn (the first
place rotating), --responses-turns (40) warm turns each, the first turn left out. The ways:
POST /chat {"session_id", "message"}; POST /v1/responses {"input", "conversation"}; and the
same chained by "previous_response_id" (the response before; turn 1 names the conversation).
Whole turns (the buffered protocol), then streamed ones (the streaming protocol, the model as
above): p50/p95 of the client's time (whole: the answer; streamed: the first text delta and the
end of the stream), the overhead in % over POST /chat, the log line's load and save, the time
after the model's first and last word; the tokens sent a turn (the scripted model's usage
records). Then the same turns again through tools/fault_proxy.py (--record-bodies) for the
table's calls, read and write units per turn (bench/storage.py's billing), whole, streamed, and
streamed with RESUMABLE_STREAMS=false (no live item).

    bench.py [--cold-starts 5] [--turns 100] [--curve-turns 200] [--quick] [--no-build] [--no-arm64]
             [--plot-only] [--streaming-only] [--stream-turns 40] [--responses-only]
             [--responses-turns 40]
"""
import argparse
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from runtime_api import RuntimeApi  # noqa: E402

TARGET = ROOT / "target" / "bench"
LOGS = TARGET / "logs"
TOOLS_PY = ROOT / ".venv" / "bin" / "python"
ORIGINAL_PY = HERE / ".venv-original" / "bin" / "python"
TABLE = "bench-sessions"
BUDGET = 8000  # HISTORY_TOKEN_BUDGET, session-chat's default
MESSAGE_CHARS = 300
FILLER = ("Please keep notes on our garden plan: tomatoes along the south fence, basil between "
          "them, beans up the trellis by the shed, and squash where the old compost heap was. ")


def message(turn: int) -> str:
    return (f"Turn {turn}. " + FILLER * 3)[:MESSAGE_CHARS]


def percentile(samples, q):
    s = sorted(samples)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def stats(samples):
    return {"p50": statistics.median(samples), "p99": percentile(samples, 99), "n": len(samples)}


def log(text):
    print(text, file=sys.stderr, flush=True)


# ---- builds -----------------------------------------------------------------------------------

def cargo_env():
    return dict(os.environ, CARGO_TARGET_DIR=str(TARGET),
                PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")


def timed_run(cmd, **kw):
    log("$ " + " ".join(map(str, cmd)))
    started = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return round(time.monotonic() - started, 1)


def build(arm64: bool):
    seconds = {"session-chat": timed_run(["cargo", "build", "--release", "--bin", "session-chat"],
                                         cwd=ROOT, env=cargo_env())}
    # Same lock as the main crate: the floors get its versions of lambda_http, the SDK, reqwest.
    shutil.copyfile(ROOT / "Cargo.lock", HERE / "hello" / "Cargo.lock")
    seconds["floors"] = timed_run(["cargo", "build", "--release", "--manifest-path",
                                   str(HERE / "hello" / "Cargo.toml")], env=cargo_env())
    if not arm64:
        return seconds, {"unavailable": "skipped (--no-arm64)"}
    target = "aarch64-unknown-linux-gnu"
    installed = subprocess.run(["rustup", "target", "list", "--installed"],
                               capture_output=True, text=True).stdout.split()
    if target not in installed:
        added = subprocess.run(["rustup", "target", "add", target], capture_output=True, text=True)
        if added.returncode != 0:
            return seconds, {"unavailable": f"rustup target add {target} failed: "
                                            + added.stderr.strip().splitlines()[-1]}
    try:
        seconds["arm64"] = timed_run(["cargo", "lambda", "build", "--release", "--arm64",
                                      "--bin", "session-chat"], cwd=ROOT, env=cargo_env())
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        return seconds, {"unavailable": f"cargo lambda build failed: {e}"}
    return seconds, artifact(TARGET / "lambda" / "session-chat" / "bootstrap")


def artifact(path: Path) -> dict:
    """Size of the arm64 bootstrap, and whether its symbol table is stripped."""
    sections = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True).stdout
    return {"path": str(path.relative_to(ROOT)), "bytes": path.stat().st_size,
            "stripped": ".symtab" not in sections if sections else None}


# ---- helper servers and functions -------------------------------------------------------------

class Servers:
    """Helper processes that print `PORT <n>` and exit when their stdin closes."""

    def __init__(self):
        self.procs = {}

    def start(self, *args) -> int:
        proc = subprocess.Popen([str(a) for a in args] + ["--port", "0", "--exit-with-stdin"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            proc.kill()
            raise RuntimeError(f"{args[1]} did not start")
        self.procs[int(line.split()[1])] = proc
        return int(line.split()[1])

    def stop(self, port=None):
        """Stops the one on `port`, or all."""
        for p in [port] if port else list(self.procs):
            proc = self.procs.pop(p)
            proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def function_env(dynamodb_port, model_port, extra):
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "RUST_LOG") if k in os.environ}
    env.update(
        AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{dynamodb_port}", TABLE_NAME=TABLE,
        OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1", OPENAI_API_KEY="sk-bench",
        MODEL_ID="gpt-4o", HISTORY_TOKEN_BUDGET=str(BUDGET),
        AWS_LAMBDA_FUNCTION_NAME="bench", AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256", AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/bench",
        AWS_LAMBDA_LOG_STREAM_NAME="bench",
    )
    env.update(extra)
    return env


def functions():
    release = TARGET / "release"
    return {
        "hello": ([release / "hello"], ROOT, {}),
        "session-chat": ([release / "session-chat"], ROOT, {}),
        "griptape": ([ORIGINAL_PY, "-m", "awslambdaric", "session_handler.handler"], HERE / "original",
                     {"LAMBDA_TASK_ROOT": str(HERE / "original"), "_HANDLER": "session_handler.handler",
                      "PYTHONPATH": str(HERE / "original")}),
    }


EVENT = json.loads((ROOT / "events" / "http-api" / "1-collin-hello.json").read_text())


def event(session: str, turn: int) -> dict:
    body = json.dumps({"session_id": session, "message": message(turn)})
    e = json.loads(json.dumps(EVENT))
    e["body"] = body
    e["headers"]["content-length"] = str(len(body))
    e["requestContext"]["requestId"] = f"{session}-{turn}"
    return e


class BadAnswer(RuntimeError):
    pass


def check(name, inv):
    try:
        ok = not inv.error and json.loads(inv.body)["statusCode"] == 200
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise BadAnswer(f"{name}: bad answer: {inv.body[:300]!r} (log in {LOGS})")


def vm_hwm_kb(pid) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_function(name, env, turns, session, logfile, keep_going=False):
    """One cold start: spawn, wait for init, invoke `1 + turns` turns. Returns the timings.
    With `keep_going`, a failed turn ends the run instead of the benchmark: the result then
    says which turn failed and how (`failed`)."""
    cmd, cwd, extra = functions()[name]
    api = RuntimeApi()
    with open(logfile, "ab") as out:
        spawned = time.monotonic()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env, **extra, AWS_LAMBDA_RUNTIME_API=api.address))
        try:
            ready = api.wait_ready(proc)
            invs, failed = [], None
            for turn in range(1, turns + 2):
                inv = api.invoke(event(session, turn))
                try:
                    check(name, inv)
                except BadAnswer:
                    if not keep_going:
                        raise
                    failed = {"turn": turn, "answer": inv.body[:400].decode(errors="replace")}
                    break
                invs.append(inv)
            rss = vm_hwm_kb(proc.pid)
        finally:
            proc.kill()
            proc.wait()
            api.close()
    return {"init_ms": (ready - spawned) * 1000, "first_ms": invs[0].seconds * 1000 if invs else None,
            "warm_ms": [i.seconds * 1000 for i in invs[1:]], "rss_kb": rss, "failed": failed}


def run_iofloor(env, turns, session) -> list:
    messages = TARGET / "iofloor-messages.txt"
    messages.write_text("".join(message(t) + "\n" for t in range(1, turns + 2)))
    out = subprocess.run([str(TARGET / "release" / "iofloor"), session, str(messages)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["turn_ms"][1:]  # turn 1 is the first invoke's counterpart


def prompt_tokens(model_port) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{model_port}/_requests") as r:
        requests = json.load(r)

    def chars(content):
        if isinstance(content, list):  # content parts
            return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
        return len(content or "")

    def is_fold(r):  # a running-summary request (docs/context.md), not a turn's prompt
        return any(m.get("role") == "system" and "running summary" in str(m.get("content"))
                   for m in r["body"].get("messages", []))

    return [sum(chars(m.get("content")) for m in r["body"].get("messages", [])) / 4
            for r in requests if not is_fold(r)]


# ---- streamed turns ---------------------------------------------------------------------------

STREAM_FIRST_TOKEN_DELAY, STREAM_WORD_DELAY = 0.2, 0.02


def sse_event(session: str, turn: int) -> dict:
    e = event(session, turn)
    e["headers"]["accept"] = "text/event-stream"
    return e


def event_times(chunks, first_mark=b"event: delta\n", done_mark=b"event: done\n"):
    """When the first `delta` event and the `done` event had arrived, from (time, bytes) pieces
    (other dialects: their marks, e.g. the Responses API's)."""
    seen, first, done = b"", None, None
    for at, data in chunks:
        seen += data
        if first is None and first_mark in seen:
            first = at
        if done is None and done_mark in seen:
            done = at
    return first, done


def model_requests(port) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_requests") as r:
        return json.load(r)


def turn_lines(logfile) -> list:
    """The function's `chat turn` log lines, in order."""
    lines = []
    for line in Path(logfile).read_text(errors="replace").splitlines():
        start = line.find("{")
        try:
            record = json.loads(line[start:]) if start >= 0 else None
        except ValueError:
            continue
        fields = (record or {}).get("fields", record or {})
        if fields.get("message") == "chat turn":
            lines.append(fields)
    return lines


def stream_rows(turns, requests, logs):
    """Per warm turn: the excesses over the goals' allowances, and the raw figures (ms)."""
    rows = []
    for t, m, l in list(zip(turns, requests, logs))[1:]:  # the first is a cold start
        client_first = (t["first"] - t["sent"]) * 1000
        model_first = (m["first_token_at"] - m["received_at"]) * 1000
        done_after = (t["done"] - m["last_token_at"]) * 1000
        rows.append({"client_first_ms": client_first, "model_first_ms": model_first,
                     "first_over_ms": client_first - model_first, "load_ms": l["load_ms"],
                     "first_gap_ms": (t["first"] - m["first_token_at"]) * 1000,
                     "done_after_ms": done_after, "save_ms": l["save_ms"],
                     "first_excess_ms": client_first - model_first - l["load_ms"],
                     "done_excess_ms": done_after - l["save_ms"]})
    return rows


def summary(rows):
    keys = rows[0].keys() if rows else []
    return {k: stats([r[k] for r in rows]) for k in keys} | {"turns": len(rows)}


def run_streaming_runtime_api(env, turns, session, logfile, model_port):
    """Streamed turns of the release binary under the Runtime API, in the streaming protocol."""
    api = RuntimeApi()
    before = len(model_requests(model_port))
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([str(TARGET / "release" / "session-chat")], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=dict(env, INVOKE_MODE="RESPONSE_STREAM",
                                         AWS_LAMBDA_RUNTIME_API=api.address))
        try:
            api.wait_ready(proc)
            rows = []
            for turn in range(1, turns + 2):
                inv = api.invoke(sse_event(session, turn))
                first, done = event_times(inv.chunks)
                if (inv.prelude or {}).get("statusCode") != 200 or first is None or done is None:
                    raise BadAnswer(f"streamed turn {turn}: {inv.prelude} {inv.body[-300:]!r}")
                rows.append({"sent": inv.handed_at, "first": first, "done": done})
        finally:
            proc.kill()
            proc.wait()
            api.close()
    return rows, model_requests(model_port)[before:], turn_lines(logfile)[-len(rows):]


def http_stream(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    sent = time.monotonic()
    conn.request("POST", "/chat", body=json.dumps(body),
                 headers={"content-type": "application/json", "accept": "text/event-stream"})
    response = conn.getresponse()
    chunks = []
    while True:
        data = response.read1(65536)
        if not data:
            break
        chunks.append((time.monotonic(), data))
    conn.close()
    return sent, response.status, chunks


def run_streaming_watch(env, turns, session, logfile, model_port):
    """Streamed turns over HTTP through `cargo lambda watch --release` (the bench's build)."""
    port = free_port()
    watch_env = dict(env, INVOKE_MODE="RESPONSE_STREAM", CARGO_TARGET_DIR=str(TARGET),
                     PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for k in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_RUNTIME_API"):
        watch_env.pop(k, None)
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(["cargo", "lambda", "watch", "--release", "--ignore-changes", "--invoke-address",
                                 "127.0.0.1", "--invoke-port", str(port), "--bin", "session-chat"],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=watch_env,
                                start_new_session=True)
        try:
            end = time.monotonic() + 600
            while True:  # the first request waits for the emulator and the build
                try:
                    http_stream(port, {"session_id": session + "-warm", "message": "hi"})
                    break
                except OSError:
                    if time.monotonic() > end or proc.poll() is not None:
                        raise RuntimeError(f"cargo lambda watch did not answer (log in {logfile})")
                    time.sleep(0.5)
            before = len(model_requests(model_port))
            rows = []
            for turn in range(1, turns + 2):
                sent, status, chunks = http_stream(port, {"session_id": session, "message": message(turn)})
                first, done = event_times(chunks)
                if status != 200 or first is None or done is None:
                    raise BadAnswer(f"watch, streamed turn {turn}: {status} {chunks[-1:]!r}")
                rows.append({"sent": sent, "first": first, "done": done})
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return rows, model_requests(model_port)[before:], turn_lines(logfile)[-len(rows):]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_streaming(servers, db, turns, run_id):
    model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py",
                          "--first-token-delay", STREAM_FIRST_TOKEN_DELAY, "--word-delay", STREAM_WORD_DELAY)
    env = function_env(db, model, {})
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "turns": turns,
           "first_token_delay_s": STREAM_FIRST_TOKEN_DELAY, "word_delay_s": STREAM_WORD_DELAY}
    log(f"session-chat: {turns} streamed turns through the Runtime API (streaming protocol)")
    out["runtime_api"] = summary(stream_rows(*run_streaming_runtime_api(
        env, turns, f"bench-stream-{run_id}", LOGS / "stream-runtime-api.log", model)))
    log(f"session-chat: {turns} streamed turns through cargo lambda watch")
    out["watch"] = summary(stream_rows(*run_streaming_watch(
        env, turns, f"bench-stream-watch-{run_id}", LOGS / "stream-watch.log", model)))
    servers.stop(model)
    return out


def streaming_targets(r):
    rows = []
    st = r.get("streaming")
    if not st:
        return rows
    for path, label in (("runtime_api", "Runtime API"), ("watch", "cargo lambda watch")):
        s = st[path]
        v = s["first_excess_ms"]["p50"]
        rows.append({"target": f"stream first delta, {label}", "value": v, "goal": "<= load + 5 ms",
                     "ok": v <= 5, "shown": f"model first word + {s['first_over_ms']['p50']:.1f} ms "
                                            f"(load {s['load_ms']['p50']:.1f} ms) p50"})
        v = s["done_excess_ms"]["p50"]
        rows.append({"target": f"stream done, {label}", "value": v, "goal": "<= save + 5 ms",
                     "ok": v <= 5, "shown": f"model last word + {s['done_after_ms']['p50']:.1f} ms "
                                            f"(save {s['save_ms']['p50']:.1f} ms) p50"})
    return rows


def print_streaming(r):
    st = r.get("streaming")
    if not st:
        return
    print(f"\nstreamed turns ({st['turns']} warm each; {st['when']}), ms, p50 / p99:")
    print(f"{'':34}{'Runtime API':>20}{'cargo lambda watch':>22}")
    for key, label in (("client_first_ms", "client: first delta"), ("model_first_ms", "model: first word"),
                       ("first_over_ms", "  client over model"), ("load_ms", "  session load"),
                       ("first_gap_ms", "  model word -> client"), ("done_after_ms", "model last word -> done"),
                       ("save_ms", "  save")):
        cells = [f"{st[p][key]['p50']:.1f} / {st[p][key]['p99']:.1f}" for p in ("runtime_api", "watch")]
        print(f"{label:34}{cells[0]:>20}{cells[1]:>22}")


# ---- the Responses API against POST /chat -----------------------------------------------------

# The ways compared, each on a session of its own, the same messages turn by turn.
WAYS = {
    "chat": 'POST /chat {"session_id", "message"}',
    "responses": 'POST /v1/responses {"input", "conversation": <session id>}',
    "chained": 'POST /v1/responses {"input", "previous_response_id": <the last response>} '
               '(turn 1: "conversation")',
}
# The first-delta and end events of each dialect's stream.
SSE_MARKS = {"chat": (b"event: delta\n", b"event: done\n"),
             "responses": (b"event: response.output_text.delta\n", b"event: response.completed\n")}
RESPONSES_TABLES = {"latency": "bench-responses", "whole": "bench-responses-whole",
                    "streamed": "bench-responses-streamed",
                    "streamed_not_resumable": "bench-responses-plain"}


def api_event(path: str, body: dict, streamed: bool) -> dict:
    """An HTTP API event: POST `path` with the JSON body."""
    raw = json.dumps(body)
    e = json.loads(json.dumps(EVENT))
    e["rawPath"] = e["requestContext"]["http"]["path"] = path
    if path != "/chat":
        e["routeKey"] = e["requestContext"]["routeKey"] = "ANY /v1/{proxy+}"
        e["pathParameters"] = {"proxy": path[len("/v1/"):]}
    e["body"] = raw
    e["headers"]["content-length"] = str(len(raw))
    if streamed:
        e["headers"]["accept"] = "text/event-stream"
    return e


def sse_events(data: bytes) -> list:
    """(event name, data) of each server-sent event in `data`."""
    out = []
    for block in data.decode(errors="replace").split("\n\n"):
        name, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                lines.append(line[len("data: "):])
        if name or lines:
            out.append((name, "\n".join(lines)))
    return out


def output_text(response: dict) -> str:
    return "".join(part.get("text", "") for item in response.get("output") or []
                   if item.get("type") == "message" for part in item.get("content") or [])


class Way:
    """One way's conversation: the events of its turns, and what the next one follows."""

    def __init__(self, kind: str, session: str):
        self.kind, self.session, self.previous = kind, session, None

    def event(self, turn: int, streamed: bool) -> dict:
        text = message(turn)
        if self.kind == "chat":
            return api_event("/chat", {"session_id": self.session, "message": text}, streamed)
        body = {"input": text}
        if self.kind == "chained" and self.previous:
            body["previous_response_id"] = self.previous
        else:
            body["conversation"] = self.session
        if streamed:
            body["stream"] = True
        return api_event("/v1/responses", body, streamed)

    def reply(self, inv, streamed: bool) -> str:
        """The answer's reply text, checked (a Response completed, a stream to its end); keeps
        the response's id for the next turn to chain on."""
        what = f"{self.kind}: bad answer"
        if streamed:
            events = sse_events(inv.body or b"")
            if (inv.prelude or {}).get("statusCode") != 200:
                raise BadAnswer(f"{what}: {inv.prelude} {inv.body[-300:]!r}")
            if self.kind == "chat":
                done = [json.loads(d) for n, d in events if n == "done"]
                if not done:
                    raise BadAnswer(f"{what}: no done event: {inv.body[-300:]!r}")
                return done[-1]["reply"]
            done = [json.loads(d)["response"] for n, d in events if n == "response.completed"]
            if not done or events[-1][1] != "[DONE]":
                raise BadAnswer(f"{what}: no response.completed and [DONE]: {inv.body[-300:]!r}")
            response = done[-1]
        else:
            try:
                answer = json.loads(inv.body)
                body = json.loads(answer.get("body") or "null") or {}
            except (ValueError, TypeError, AttributeError):
                answer, body = {}, {}
            if inv.error or answer.get("statusCode") != 200:
                raise BadAnswer(f"{what}: {(inv.body or b'')[:300]!r}")
            if self.kind == "chat":
                return body["reply"]
            response = body
        if response.get("status") != "completed":
            raise BadAnswer(f"{what}: status {response.get('status')}")
        self.previous = response["id"]
        return output_text(response)


READ_OPS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}


class TableMeter:
    """Every table call of a turn, through tools/fault_proxy.py --record-bodies, billed as
    bench/storage.py bills them (units from item sizes; a Scan of the table after the turn)."""

    def __init__(self, proxy: int, db: int, table: str):
        import storage  # here: it imports this module

        self.storage, self.proxy = storage, proxy
        self.table = storage.Table(storage.dynamodb(db), table)
        self.sizes = {k: size for k, (size, _) in self.table.scan().items()}

    def before(self):
        self.storage.control(self.proxy, "DELETE", "/_log")

    def after(self) -> dict:
        entries = self.storage.control(self.proxy, "GET", "/_log")
        scanned = self.table.scan()
        after = {k: size for k, (size, _) in scanned.items()}
        figures, _ = self.storage.bill_turn(entries, self.sizes, after, self.table,
                                            {k: item for k, (_, item) in scanned.items()})
        self.sizes = after
        # What the reads brought back, as the table's JSON (units round up per item).
        figures["read_bytes"] = sum(len((e.get("response") or "").encode()) for e in entries
                                    if e.get("op") in READ_OPS)
        return figures


def alternate_ways(env, turns, streamed, label, run_id, logfile, meter=None) -> list:
    """`1 + turns` turns of each way through one function process (Lambda's streaming mode for
    `streamed`), a turn of each in turn, the first place rotating, so a passing load weighs on
    every way alike. Per turn: the client's times (monotonic s), the reply, the invocation's
    id (its log line's request_id) and, with `meter`, its table figures."""
    import storage  # here: it imports this module

    ways = [Way(kind, f"resp-{label}-{kind}-{run_id}") for kind in WAYS]
    fn = storage.Function(TARGET / "release" / "session-chat",
                          dict(env, INVOKE_MODE="RESPONSE_STREAM") if streamed else env, logfile)
    rows = []
    try:
        for turn in range(1, turns + 2):
            k = turn % len(ways)
            for way in ways[k:] + ways[:k]:
                event = way.event(turn, streamed)
                if meter:
                    meter.before()
                inv = fn.api.invoke(event)
                row = {"kind": way.kind, "turn": turn, "id": inv.id, "sent": inv.handed_at,
                       "end": inv.done_at, "reply": way.reply(inv, streamed)}
                if streamed:
                    row["first"], row["done"] = event_times(
                        inv.chunks, *SSE_MARKS["chat" if way.kind == "chat" else "responses"])
                if meter:
                    row["table"] = meter.after()
                rows.append(row)
    finally:
        fn.close()
    return rows


def p50_p95(samples) -> dict:
    return {"p50": round(statistics.median(samples), 2), "p95": round(percentile(samples, 95), 2),
            "n": len(samples)}


def way_figures(rows, requests, logfile, streamed) -> dict:
    """Per way, over its warm turns (turn 1, a new session and for one way the process's first
    invoke, left out): latency p50/p95 in ms (the client's; after the scripted model's first and
    last word; the log line's load, model and save), and the mean tokens sent and model calls a
    turn (the scripted model's usage records of the turn's requests)."""
    import context  # here: it imports this module

    def ms(a, b):
        return (a - b) * 1000

    per_turn = context.by_turn(rows, requests)
    lines = {line.get("request_id"): line for line in turn_lines(logfile)}
    out = {}
    for kind in WAYS:
        times, counts = {}, {"prompt_tokens": [], "completion_tokens": [], "model_calls": []}
        for row, reqs in zip(rows, per_turn):
            if row["kind"] != kind or row["turn"] == 1:
                continue
            if streamed:
                model = next(r for r in reqs if not r.get("summary"))
                got = {"first_delta_ms": ms(row["first"], row["sent"]),
                       "total_ms": ms(row["end"], row["sent"]),
                       "first_after_model_ms": ms(row["first"], model["first_token_at"]),
                       "end_after_model_ms": ms(row["end"], model["last_token_at"])}
            else:
                got = {"turn_ms": ms(row["end"], row["sent"])}
            line = lines.get(row["id"], {})
            parts = {k: line[k] for k in ("load_ms", "model_ms", "save_ms") if line.get(k) is not None}
            got |= parts
            if not streamed and len(parts) == 3:
                # Beyond the turn's read, model and save: the body's parsing, a lookup before
                # the turn (previous_response_id's), the answer's building, the Runtime API.
                got["outside_turn_ms"] = got["turn_ms"] - sum(parts.values())
            for k, v in got.items():
                times.setdefault(k, []).append(v)
            usage = [r.get("usage") or {} for r in reqs]
            counts["prompt_tokens"].append(sum(u.get("prompt_tokens", 0) for u in usage))
            counts["completion_tokens"].append(sum(u.get("completion_tokens", 0) for u in usage))
            counts["model_calls"].append(len(reqs))
        out[kind] = {k: p50_p95(v) for k, v in times.items()}
        out[kind]["per_turn"] = {k: round(sum(v) / len(v), 1) for k, v in counts.items()}
        out[kind]["by_turn"] = {k: [round(x, 2) for x in v] for k, v in times.items()}
    return out


def paired_ms(ways, key) -> dict:
    """Each Responses way's median, over the turns, of its time less POST /chat's at the same
    turn (the same conversation length), in ms."""
    base = ways["chat"]["by_turn"][key]
    return {kind: round(statistics.median(a - b for a, b in zip(ways[kind]["by_turn"][key], base)), 2)
            for kind in WAYS if kind != "chat"}


def overhead_pct(ways, key) -> dict:
    """Each Responses way's p50 and p95 of `key` over POST /chat's, in %."""
    base = ways["chat"][key]
    return {kind: {q: round((ways[kind][key][q] / base[q] - 1) * 100, 1) for q in ("p50", "p95")}
            for kind in WAYS if kind != "chat"}


def table_figures(rows) -> dict:
    """Per way, the mean table calls (by operation), read and write units and bytes written a
    warm turn."""
    out = {}
    for kind in WAYS:
        turns = [r["table"] for r in rows if r["kind"] == kind and r["turn"] > 1]
        n = len(turns)
        ops = sorted({op for t in turns for op in t["calls"]})
        out[kind] = {
            "turns": n,
            "table_calls": round(sum(sum(t["calls"].values()) for t in turns) / n, 2),
            "table_calls_by_op": {op: round(sum(t["calls"].get(op, 0) for t in turns) / n, 2)
                                  for op in ops},
            "rcu": round(sum(t["rcu"] for t in turns) / n, 2),
            "wcu": round(sum(t["wcu"] for t in turns) / n, 2),
            "bytes_written": round(sum(t["bytes_written"] for t in turns) / n),
            "read_bytes": round(sum(t["read_bytes"] for t in turns) / n),
            "updates_sized_approximately": sum(t["updates_sized_approximately"] for t in turns),
        }
    return out


def same_replies(rows) -> bool:
    """Every way got the same reply at each turn (the scripted model answers from the history:
    the same conversation reached it)."""
    by_turn = {}
    for r in rows:
        by_turn.setdefault(r["turn"], set()).add(r["reply"])
    return all(len(replies) == 1 for replies in by_turn.values())


def run_responses(servers, turns, run_id) -> dict:
    """POST /chat against the Responses API (both ways of naming the conversation): latency
    whole and streamed straight to the local table, then the table's calls and units through
    the fault proxy, streamed with RESUMABLE_STREAMS on (the default) and off."""
    import storage  # here: it imports this module

    db = servers.start(TOOLS_PY, ROOT / "tools" / "dynamodb_local.py",
                       *[arg for t in RESPONSES_TABLES.values() for arg in ("--table", t)])
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": storage.commit(),
           "turns": turns,
           "ways": WAYS, "message_chars": MESSAGE_CHARS,
           "first_token_delay_s": STREAM_FIRST_TOKEN_DELAY, "word_delay_s": STREAM_WORD_DELAY,
           "order": "a turn of each way in turn, the first place rotating; turn 1 left out",
           "loadavg_before": round(os.getloadavg()[0], 2)}

    def model():
        return servers.start(sys.executable, ROOT / "tools" / "scripted_model.py",
                             "--first-token-delay", STREAM_FIRST_TOKEN_DELAY,
                             "--word-delay", STREAM_WORD_DELAY)

    replies_agree = True
    for streamed in (False, True):
        part = "streamed" if streamed else "whole"
        log(f"Responses API vs POST /chat: {turns} {part} turns each way, alternated")
        m = model()
        env = function_env(db, m, {"TABLE_NAME": RESPONSES_TABLES["latency"]})
        logfile = LOGS / f"responses-{part}.log"
        rows = alternate_ways(env, turns, streamed, part, run_id, logfile)
        ways = way_figures(rows, model_requests(m), logfile, streamed)
        servers.stop(m)
        keys = ("first_delta_ms", "total_ms") if streamed else ("turn_ms",)
        paired = {k: paired_ms(ways, k) for k in keys + (
            ("load_ms", "save_ms") if streamed else ("load_ms", "save_ms", "outside_turn_ms"))}
        # The same, as % of /chat's p50: steadier than the p50s' ratio, as turns grow longer
        # with the conversation.
        paired_pct = {k: {kind: round(d / ways["chat"][k]["p50"] * 100, 1) for kind, d in paired[k].items()}
                      for k in keys}
        for kind in WAYS:
            del ways[kind]["by_turn"]  # (the samples: not kept in results.json)
        out[part] = ways | {"overhead_pct": {k: overhead_pct(ways, k) for k in keys},
                            "paired_diff_ms": paired, "paired_diff_pct_of_chat_p50": paired_pct}
        replies_agree &= same_replies(rows)

    out["table"] = {}
    for part, streamed, extra in (("whole", False, {}), ("streamed", True, {}),
                                  ("streamed_not_resumable", True, {"RESUMABLE_STREAMS": "false"})):
        log(f"Responses API vs POST /chat: table calls and units, {turns} {part} turns each way")
        m = model()
        proxy = servers.start(TOOLS_PY, ROOT / "tools" / "fault_proxy.py",
                              "--upstream", f"http://127.0.0.1:{db}", "--record-bodies")
        meter = TableMeter(proxy, db, RESPONSES_TABLES[part])
        env = function_env(proxy, m, {"TABLE_NAME": RESPONSES_TABLES[part], **extra})
        rows = alternate_ways(env, turns, streamed, part + "-cost", run_id,
                              LOGS / f"responses-cost-{part}.log", meter)
        servers.stop(proxy)
        servers.stop(m)
        out["table"][part] = table_figures(rows) | {"env": extra}
        replies_agree &= same_replies(rows)
    out["same_replies"] = replies_agree
    out["loadavg_after"] = round(os.getloadavg()[0], 2)
    servers.stop(db)
    return out


def responses_targets(r):
    rs = r.get("responses")
    if not rs:
        return []
    rows = []
    for part, key, what in (("whole", "turn_ms", "whole turn"), ("streamed", "first_delta_ms", "first delta"),
                            ("streamed", "total_ms", "streamed turn")):
        for kind in ("responses", "chained"):
            v = rs[part]["overhead_pct"][key][kind]["p50"]
            rows.append({"target": f"Responses ({'previous_response_id' if kind == 'chained' else 'conversation'}), {what}",
                         "value": v, "goal": "<= +10% of /chat", "ok": v <= 10,
                         "shown": f"{v:+.1f}% p50 ({rs[part][kind][key]['p50']:.1f} vs "
                                  f"{rs[part]['chat'][key]['p50']:.1f} ms)"})
    return rows


def print_responses(r):
    rs = r.get("responses")
    if not rs:
        return
    kinds, w = list(WAYS), 50
    print(f"\nResponses API vs POST /chat ({rs['turns']} warm turns each way, alternated; {rs['when']}), "
          f"ms p50 / p95; overhead over /chat p50 / p95:")
    print(f"{'':{w}}" + "".join(f"{h:>18}" for h in ("POST /chat", "conversation", "previous_resp_id"))
          + f"{'conversation':>16}{'previous_resp_id':>18}")

    def line(label, part, key):
        x = rs[part]
        cells = [f"{x[k][key]['p50']:.1f} / {x[k][key]['p95']:.1f}" for k in kinds]
        o = x["overhead_pct"].get(key)
        extra = "".join(f"{o[k]['p50']:+.1f} / {o[k]['p95']:+.1f}%".rjust(n)
                        for k, n in zip(kinds[1:], (16, 18))) if o else ""
        print(f"{label:{w}}" + "".join(f"{c:>18}" for c in cells) + extra)

    line("whole turn", "whole", "turn_ms")
    line("  load (log line)", "whole", "load_ms")
    line("  save (log line)", "whole", "save_ms")
    line("  the rest, outside the turn", "whole", "outside_turn_ms")
    line("streamed: first delta", "streamed", "first_delta_ms")
    line("streamed: end of the stream", "streamed", "total_ms")
    line("  first delta after the model's word", "streamed", "first_after_model_ms")
    line("  end after the model's last word", "streamed", "end_after_model_ms")
    line("  load (log line)", "streamed", "load_ms")
    line("  save (log line)", "streamed", "save_ms")
    for part, key, label in (("whole", "turn_ms", "whole turn"), ("whole", "outside_turn_ms", "  outside the turn"),
                             ("streamed", "first_delta_ms", "first delta"),
                             ("streamed", "total_ms", "end of the stream")):
        d, pct = rs[part]["paired_diff_ms"][key], rs[part]["paired_diff_pct_of_chat_p50"].get(key)
        print(f"{'  less /chat, same turn: ' + label:{w}}{'':18}"
              + "".join((f"{d[k]:+.2f} ms" + (f" ({pct[k]:+.1f}%)" if pct else "")).rjust(19)
                        for k in kinds[1:]))
    for key, label in (("prompt_tokens", "prompt tokens a turn, whole / streamed"),
                       ("model_calls", "model calls a turn, whole / streamed")):
        print(f"{label:{w}}" + "".join(f"{rs['whole'][k]['per_turn'][key]:g} / "
                                       f"{rs['streamed'][k]['per_turn'][key]:g}".rjust(18) for k in kinds))
    for part, label in (("whole", "whole"), ("streamed", "streamed"),
                        ("streamed_not_resumable", "RESUMABLE_STREAMS=false")):
        x = rs["table"][part]
        print(f"{'table: calls / RCU / WCU, ' + label:{w}}"
              + "".join(f"{x[k]['table_calls']:g} / {x[k]['rcu']:g} / {x[k]['wcu']:g}".rjust(18) for k in kinds))
    x = rs["table"]["whole"]
    print(f"{'table: bytes read / written, whole':{w}}"
          + "".join(f"{x[k]['read_bytes']} / {x[k]['bytes_written']}".rjust(18) for k in kinds))
    print(f"same replies every turn: {rs['same_replies']}; load average {rs['loadavg_before']} before, "
          f"{rs['loadavg_after']} after")


# ---- report -----------------------------------------------------------------------------------

def targets(r):
    s, h, g = r["systems"]["session-chat"], r["systems"]["hello"], r["systems"]["griptape"]
    med = statistics.median
    rows = []

    def row(what, value, goal, ok, show):
        rows.append({"target": what, "value": value, "goal": goal, "ok": ok, "shown": show})

    v = med(s["init_ms"]) / med(h["init_ms"])
    row("init vs hello floor", v, "<= 3x", v <= 3, f"{v:.2f}x")
    v = med(g["cold_start_ms"]) / med(s["cold_start_ms"])
    row("cold start (init + first invoke) vs griptape", v, ">= 30x faster", v >= 30, f"{v:.0f}x faster")
    v = g["warm"]["p50"] / s["warm"]["p50"]
    row("warm p50 vs griptape", v, ">= 10x faster", v >= 10, f"{v:.0f}x faster")
    v = s["warm"]["p50"] / r["iofloor"]["warm"]["p50"]
    row("warm p50 vs I/O floor", v, "<= 1.3x", v <= 1.3, f"{v:.2f}x")
    v = max(s["peak_rss_kb"]) / max(g["peak_rss_kb"])
    row("peak RSS vs griptape", v, "<= 1/4", v <= 0.25, f"1/{1 / v:.1f}")
    b = r["arm64_bootstrap"]
    if "bytes" in b:
        v = b["bytes"] / 1e6
        row("stripped arm64 bootstrap", v, "<= 8 MB", v <= 8 and b.get("stripped") is not False,
            f"{v:.2f} MB" + ("" if b.get("stripped") else " (NOT stripped)"))
    else:
        row("stripped arm64 bootstrap", None, "<= 8 MB", None, "unavailable: " + b["unavailable"])
    c = r["prompt_tokens"]
    sc = c["session-chat"]
    full = next((i for i, t in enumerate(sc) if t >= 0.9 * BUDGET), None)
    # The window moves in steps (docs/context.md): between half the budget and the budget.
    if full is None:
        row("prompt tokens bounded after the budget", None, "<= 1.1x budget", None,
            f"budget not reached in {len(sc)} turns")
    else:
        after = sc[full:]
        ok = max(after) <= 1.1 * BUDGET
        row("prompt tokens bounded after the budget", max(after) / BUDGET, "<= 1.1x budget", ok,
            f"from turn {full + 1}: {min(after):.0f}-{max(after):.0f} tokens, in steps "
            f"(griptape at turn {len(c['griptape'])}: {c['griptape'][-1]:.0f})")
    fails = r.get("curve_failures", {})
    turns = r["config"]["curve_turns"]
    row(f"a {turns}-turn conversation completes", None, "every turn", "session-chat" not in fails,
        "session-chat: " + (f"failed at turn {fails['session-chat']['turn']}" if "session-chat" in fails
                            else f"all {turns}")
        + "; griptape: " + (f"failed at turn {fails['griptape']['turn']}" if "griptape" in fails
                            else f"all {turns}"))
    return rows + streaming_targets(r) + responses_targets(r)


def print_table(r):
    sys_ = r["systems"]
    med = statistics.median
    names = ["hello", "session-chat", "griptape"]
    print(f"\n{'':30}" + "".join(f"{n:>14}" for n in names) + f"{'I/O floor':>14}")

    def line(label, f, floor=""):
        print(f"{label:30}" + "".join(f"{f(sys_[n]):>14}" for n in names) + f"{floor:>14}")

    line("init, ms (median)", lambda s: f"{med(s['init_ms']):.1f}")
    line("first invoke, ms (median)", lambda s: f"{med(s['first_invoke_ms']):.1f}")
    line("cold start, ms (median)", lambda s: f"{med(s['cold_start_ms']):.1f}")
    fl = r["iofloor"]["warm"]
    line("warm p50, ms", lambda s: f"{s['warm']['p50']:.2f}", f"{fl['p50']:.2f}")
    line("warm p99, ms", lambda s: f"{s['warm']['p99']:.2f}", f"{fl['p99']:.2f}")
    line("peak RSS, MB (max)", lambda s: f"{max(s['peak_rss_kb']) / 1024:.1f}")
    c = r["prompt_tokens"]
    print(f"{'conversation turns sent':30}{'':>14}{len(c['session-chat']):>14}{len(c['griptape']):>14}")
    print(f"{'prompt tokens, last turn':30}{'':>14}{c['session-chat'][-1]:>14.0f}{c['griptape'][-1]:>14.0f}")
    print_streaming(r)
    print_responses(r)
    print(f"\n{'target':48}{'goal':>16}  {'measured':<}")
    for t in r["targets"]:
        mark = {True: "ok", False: "MISSED", None: "n/a"}[t["ok"]]
        print(f"{t['target']:48}{t['goal']:>16}  {t['shown']}  [{mark}]")
    cfg = r["config"]
    print(f"\n{cfg['cold_starts']} cold starts x {cfg['turns']} warm turns each; "
          f"{cfg['curve_turns']}-turn token curve; load average {r['machine']['loadavg_before']} "
          f"before, {r['machine']['loadavg_after']} after; logs in {LOGS.relative_to(ROOT)}")


def plot(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = statistics.median
    names = ["hello", "session-chat", "griptape"]
    colors = {"hello": "#999999", "session-chat": "#d9480f", "griptape": "#1c7ed6", "I/O floor": "#555555"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))

    ax = axes[0]
    init = [med(r["systems"][n]["init_ms"]) for n in names]
    first = [med(r["systems"][n]["first_invoke_ms"]) for n in names]
    ax.bar(names, init, color=[colors[n] for n in names], label="init")
    ax.bar(names, first, bottom=init, color=[colors[n] for n in names], alpha=0.45, label="first invoke")
    for i, (a, b) in enumerate(zip(init, first)):
        ax.text(i, a + b, f"{a + b:.0f} ms", ha="center", va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)  # bars on a log axis start here, not at an automatic limit
    ax.set_ylabel("ms (log)")
    ax.set_title("Cold start: init + first invoke (median)")
    ax.legend(fontsize=8)

    ax = axes[1]
    labels = ["I/O floor"] + names
    warm = [r["iofloor"]["warm"]] + [r["systems"][n]["warm"] for n in names]
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], [w["p50"] for w in warm], 0.4, color=[colors[n] for n in labels], label="p50")
    ax.bar([x + 0.2 for x in xs], [w["p99"] for w in warm], 0.4, color=[colors[n] for n in labels],
           alpha=0.45, label="p99")
    for x, w in zip(xs, warm):
        ax.text(x - 0.2, w["p50"], f"{w['p50']:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.1)
    ax.set_ylabel("ms (log)")
    ax.set_title(f"Warm turn latency ({r['config']['turns']} turns a session)")
    ax.legend(fontsize=8)

    ax = axes[2]
    for n in ("session-chat", "griptape"):
        tokens = r["prompt_tokens"][n]
        ax.plot(range(1, len(tokens) + 1), tokens, color=colors[n], label=n)
        failed = r.get("curve_failures", {}).get(n)
        if failed:
            ax.plot([len(tokens)], [tokens[-1]], "x", color=colors[n], markersize=9)
            ax.annotate(f"{n} fails at turn {failed['turn']}\n(item over 400 KB)"
                        if "exceeded the maximum allowed size" in failed["answer"]
                        else f"{n} fails at turn {failed['turn']}",
                        (len(tokens), tokens[-1]), textcoords="offset points", xytext=(-10, -28),
                        ha="right", fontsize=8, color=colors[n])
    ax.axhline(BUDGET, color="#999999", linestyle="--", linewidth=1, label=f"budget {BUDGET}")
    ax.set_xlabel("turn")
    ax.set_ylabel("prompt tokens (characters / 4)")
    ax.set_title("Prompt tokens sent per turn")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- main -------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold-starts", type=int, default=5)
    p.add_argument("--turns", type=int, default=100, help="warm turns after each cold start")
    p.add_argument("--curve-turns", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="2 cold starts, 20 turns, 80-turn curve")
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--no-arm64", action="store_true", help="skip the arm64 bootstrap build")
    p.add_argument("--out", default=str(HERE), help="where results.json and bench.png go")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw bench.png and reprint the table from results.json")
    p.add_argument("--streaming-only", action="store_true",
                   help="build session-chat only, measure streamed turns, and replace just the "
                        "streaming part of results.json")
    p.add_argument("--stream-turns", type=int, default=40, help="streamed warm turns each way")
    p.add_argument("--responses-turns", type=int, default=40,
                   help="warm turns of each way in the Responses API against POST /chat")
    p.add_argument("--responses-only", action="store_true",
                   help="build session-chat only, measure the Responses API against POST /chat, "
                        "and replace just the responses part of results.json")
    a = p.parse_args()
    if a.plot_only:
        r = json.loads((Path(a.out) / "results.json").read_text())
        plot(r, Path(a.out) / "bench.png")
        print_table(r)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops what we started
    if a.quick:
        a.cold_starts, a.turns, a.curve_turns, a.stream_turns = 2, 20, 80, 10
        a.responses_turns = 20
    LOGS.mkdir(parents=True, exist_ok=True)
    for f in LOGS.glob("*.log"):
        f.unlink()
    if a.streaming_only:
        return streaming_only(a)
    if a.responses_only:
        return responses_only(a)
    if not ORIGINAL_PY.exists():
        sys.exit(f"{ORIGINAL_PY} is missing: run `make bench` (it installs it)")

    r = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "config": {"cold_starts": a.cold_starts, "turns": a.turns, "curve_turns": a.curve_turns,
                    "message_chars": MESSAGE_CHARS, "history_token_budget": BUDGET},
         "machine": {"cpus": os.cpu_count()}}
    if a.no_build:
        r["build_seconds"], arm = {}, {"unavailable": "not built (--no-build)"}
        path = TARGET / "lambda" / "session-chat" / "bootstrap"
        if path.exists():
            arm = artifact(path)
    else:
        r["build_seconds"], arm = build(not a.no_arm64)
    r["arm64_bootstrap"] = arm

    servers = Servers()
    try:
        if not a.no_build:
            time.sleep(20)  # let the machine settle after the builds
        r["machine"]["loadavg_before"] = round(os.getloadavg()[0], 2)
        db = servers.start(TOOLS_PY, ROOT / "tools" / "dynamodb_local.py", "--table", TABLE)
        model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py")
        env = function_env(db, model, {})
        run_id = time.strftime("%H%M%S")
        r["systems"] = {}
        names = ("hello", "session-chat", "griptape")
        # Interleaved, so a passing load on the machine weighs on every function alike.
        all_runs = {name: [] for name in names}
        for k in range(a.cold_starts):
            for name in names:
                log(f"{name}: cold start {k + 1}/{a.cold_starts}, {a.turns} warm turns")
                all_runs[name].append(run_function(name, env, a.turns, f"bench-{name}-{run_id}-{k}",
                                                   LOGS / f"{name}.log"))
        for name in names:
            runs = all_runs[name]
            warm = [ms for x in runs for ms in x["warm_ms"]]
            r["systems"][name] = {
                "init_ms": [x["init_ms"] for x in runs],
                "first_invoke_ms": [x["first_ms"] for x in runs],
                "cold_start_ms": [x["init_ms"] + x["first_ms"] for x in runs],
                "warm": stats(warm),
                "warm_ms_by_turn": [statistics.median(t) for t in zip(*(x["warm_ms"] for x in runs))],
                "peak_rss_kb": [x["rss_kb"] for x in runs],
            }
        log(f"I/O floor: {a.cold_starts} sessions, {a.turns} timed turns each")
        floor = [ms for k in range(a.cold_starts)
                 for ms in run_iofloor(env, a.turns, f"bench-iofloor-{run_id}-{k}")]
        r["iofloor"] = {"warm": stats(floor)}

        r["prompt_tokens"] = {}
        for name in ("session-chat", "griptape"):
            log(f"{name}: prompt tokens over a {a.curve_turns}-turn conversation")
            curve_model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py")
            env = function_env(db, curve_model, {})
            result = run_function(name, env, a.curve_turns - 1, f"bench-curve-{name}-{run_id}",
                                  LOGS / f"{name}-curve.log", keep_going=True)
            r["prompt_tokens"][name] = prompt_tokens(curve_model)
            if result["failed"]:
                r.setdefault("curve_failures", {})[name] = result["failed"]
                log(f"{name}: the conversation failed at turn {result['failed']['turn']}: "
                    f"{result['failed']['answer'][:200]}")
            servers.stop(curve_model)
        r["streaming"] = run_streaming(servers, db, a.stream_turns, run_id)
        r["responses"] = run_responses(servers, a.responses_turns, run_id)
        r["machine"]["loadavg_after"] = round(os.getloadavg()[0], 2)
    finally:
        servers.stop()

    r["targets"] = targets(r)
    out = Path(a.out)
    (out / "results.json").write_text(json.dumps(r, indent=1) + "\n")
    plot(r, out / "bench.png")
    print_table(r)
    print(f"wrote {out / 'results.json'} and {out / 'bench.png'}")
    return 0


def streaming_only(a) -> int:
    """Measures streamed turns alone and puts them into the existing results.json."""
    out = Path(a.out) / "results.json"
    r = json.loads(out.read_text()) if out.exists() else {}
    if not a.no_build:
        timed_run(["cargo", "build", "--release", "--bin", "session-chat"], cwd=ROOT, env=cargo_env())
    servers = Servers()
    try:
        db = servers.start(TOOLS_PY, ROOT / "tools" / "dynamodb_local.py", "--table", TABLE)
        r["streaming"] = run_streaming(servers, db, a.stream_turns, time.strftime("%H%M%S"))
    finally:
        servers.stop()
    if "systems" in r:
        r["targets"] = targets(r)
        out.write_text(json.dumps(r, indent=1) + "\n")
        print_table(r)
    else:
        print_streaming(r)
    print(f"wrote the streaming part of {out}")
    return 0


def responses_only(a) -> int:
    """Measures the Responses API against POST /chat alone, into the existing results.json."""
    out = Path(a.out) / "results.json"
    r = json.loads(out.read_text()) if out.exists() else {}
    if not a.no_build:
        timed_run(["cargo", "build", "--release", "--bin", "session-chat"], cwd=ROOT, env=cargo_env())
    servers = Servers()
    try:
        if not a.no_build:
            time.sleep(20)  # let the machine settle after the build
        r["responses"] = run_responses(servers, a.responses_turns, time.strftime("%H%M%S"))
    finally:
        servers.stop()
    if "systems" in r:
        r["targets"] = targets(r)
        print_table(r)
    else:
        print_responses(r)
    out.write_text(json.dumps(r, indent=1) + "\n")
    print(f"wrote the responses part of {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
