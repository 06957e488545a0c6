#!/usr/bin/env python3
"""Cold starts of two release binaries of session-chat, say with and without the chat page,
each a fresh process under a fresh local Lambda Runtime API (runtime_api.py), interleaved:

  init        spawn -> the process's first GET .../invocation/next
  GET /       its first invocation: the page (assembled on this first request), or a 404
  turn        then one POST /chat turn (the local table and the scripted model)

    page_cold_start.py WITH WITHOUT [--runs 15]

Prints the medians and the binaries' sizes. Starts the local DynamoDB-compatible server and the
scripted model (tools/) and stops them, and every function process, at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from runtime_api import RuntimeApi  # noqa: E402

TABLE = "page-bench"
EVENT = json.loads((ROOT / "events" / "http-api" / "1-collin-hello.json").read_text())


def helper(script, *args):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / script), "--port", "0",
                             "--exit-with-stdin", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        raise SystemExit(f"{script} did not start: {line!r}")
    return proc, int(line.split()[1])


def event(method, path, body=None, n=0):
    e = json.loads(json.dumps(EVENT))
    e["rawPath"] = path
    e["routeKey"] = f"{method} {path}"
    e["requestContext"]["http"]["method"] = method
    e["requestContext"]["http"]["path"] = path
    e["requestContext"]["requestId"] = f"page-bench-{n}"
    e["body"] = None if body is None else json.dumps(body)
    return e


def cold_start(binary, env, n):
    api = RuntimeApi()
    spawned = time.monotonic()
    proc = subprocess.Popen([str(binary)], env=dict(env, AWS_LAMBDA_RUNTIME_API=api.address),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = api.wait_ready(proc)
        page = api.invoke(event("GET", "/", n=n))
        turn = api.invoke(event("POST", "/chat", {"session_id": f"bench-{n}", "message": "Hello my name is Collin."}, n))
        status = json.loads(page.body)["statusCode"]
        assert json.loads(turn.body)["statusCode"] == 200, turn.body[:300]
    finally:
        proc.kill()
        proc.wait()
        api.close()
    return {"init": (ready - spawned) * 1000, "page": page.seconds * 1000,
            "turn": turn.seconds * 1000, "page_status": status}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("with_page", type=Path)
    parser.add_argument("without_page", type=Path)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    ddb, ddb_port = helper("dynamodb_local.py", "--table", TABLE)
    model, model_port = helper("scripted_model.py")
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.update(
        AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
        AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{ddb_port}",
        TABLE_NAME=TABLE, OWNER_INDEX="by_owner", OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1",
        OPENAI_API_KEY="sk-bench", MODEL_ID="scripted", AUTH_MODE="NONE", RUST_LOG="warn",
        AWS_LAMBDA_FUNCTION_NAME="bench", AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256")
    results = {"with": [], "without": []}
    try:
        for n in range(args.runs):
            for name, binary in (("with", args.with_page), ("without", args.without_page)):
                results[name].append(cold_start(binary, env, n * 2 + (name == "with")))
    finally:
        for proc in (ddb, model):
            proc.stdin.close()
            proc.wait(timeout=10)
    print(f"{args.runs} cold starts each, interleaved; medians in ms")
    print(f"{'':10} {'binary bytes':>13} {'init':>7} {'GET /':>7} {'turn':>7}  GET / status")
    for name, binary in (("with", args.with_page), ("without", args.without_page)):
        r = results[name]
        med = lambda k: statistics.median(x[k] for x in r)
        print(f"{name:10} {binary.stat().st_size:13,} {med('init'):7.2f} {med('page'):7.2f} "
              f"{med('turn'):7.2f}  {r[0]['page_status']}")


if __name__ == "__main__":
    main()
