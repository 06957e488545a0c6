#!/usr/bin/env python3
"""Drives one function process with many invocations at once, as Lambda Managed Instances do.

    concurrent_runtime.py --binary PATH --workers N [--start-at EPOCH_S] [--sequential] < events.json

Reads a JSON list of API Gateway events on stdin, starts a local Lambda Runtime API
(bench/runtime_api.py, which hands out invocations to every concurrent /next poll), spawns the
function with AWS_LAMBDA_MAX_CONCURRENCY=N (the rest of its environment is this process's), hands
it every event at once from as many threads, and prints one JSON object:

    {"wall_s": ..., "peak_rss_kb": ..., "invocations": [{"id", "status", "body", "seconds"}],
     "logs": [<each JSON log line the function wrote>]}

With --start-at, the events are handed out at that wall-clock time (time.time(), or at once if
the function is ready only later), so several of these processes can start one burst together;
then "started_at" (when they were handed out) and each invocation's "handed_at" and "done_at"
are time.monotonic() readings, comparable across processes on one machine.

With --sequential, each event is handed out when the previous one is answered (a conversation's
turns, in order).

The function is stopped when its answers are in (or after --timeout seconds).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))

from runtime_api import RuntimeApi  # noqa: E402


def peak_rss_kb(pid: int) -> int:
    """The process's high-water resident set (VmHWM), in kB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--start-at", type=float, default=None,
                        help="hand the events out at this time.time() (after the function is ready)")
    parser.add_argument("--sequential", action="store_true",
                        help="hand each event out when the previous one is answered")
    args = parser.parse_args()
    events = json.load(sys.stdin)

    api = RuntimeApi()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_MAX_CONCURRENCY": str(args.workers),
        "AWS_LAMBDA_FUNCTION_NAME": "session-chat",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_LAMBDA_LOG_GROUP_NAME": "local",
    })
    logs_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"concurrent-{os.getpid()}.log")
    with open(logs_path, "wb") as log_file:
        proc = subprocess.Popen([args.binary], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        results = [None] * len(events)
        try:
            api.wait_ready(proc, timeout=args.timeout)
            if args.start_at is not None:
                time.sleep(max(0.0, args.start_at - time.time()))
            started = time.monotonic()

            def invoke(i):
                try:
                    inv = api.invoke(events[i], timeout=args.timeout)
                    if inv.prelude is not None:  # answered in Lambda's streaming format
                        status, body = inv.prelude.get("statusCode"), inv.body.decode()
                    else:
                        response = json.loads(inv.body or b"null") or {}
                        status, body = response.get("statusCode"), response.get("body")
                    results[i] = {"id": inv.id, "status": status, "body": body,
                                  "seconds": inv.seconds, "error": inv.error,
                                  "handed_at": inv.handed_at, "done_at": inv.done_at}
                except Exception as e:  # noqa: BLE001 - reported in the output
                    results[i] = {"id": None, "status": None, "body": str(e), "seconds": None,
                                  "error": True}

            if args.sequential:
                for i in range(len(events)):
                    invoke(i)
            else:
                threads = [threading.Thread(target=invoke, args=(i,)) for i in range(len(events))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            wall = time.monotonic() - started
            rss = peak_rss_kb(proc.pid)
        finally:
            proc.kill()
            proc.wait()
            api.close()
    logs = []
    with open(logs_path, "rb") as f:
        for line in f:
            try:
                logs.append(json.loads(line))
            except ValueError:
                logs.append({"raw": line.decode(errors="replace").rstrip()})
    os.remove(logs_path)
    json.dump({"wall_s": wall, "peak_rss_kb": rss, "started_at": started, "invocations": results,
               "logs": logs}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
