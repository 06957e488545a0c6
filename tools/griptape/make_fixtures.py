#!/usr/bin/env python3
"""Regenerates tests/fixtures/griptape/<shape>/<session>.json with real griptape releases.

    make_fixtures.py --venv /tmp/gt-venvs/v0_27 --venv /tmp/gt-venvs/v0_30 --venv /tmp/gt-venvs/v1
                     [--endpoint URL --table NAME] [--model-url URL] [--out DIR]

Each --venv is a virtualenv with one griptape release and boto3 (requirements-*.txt beside this
file). For each, play_walkthrough.py runs the seed's walkthrough under that venv's python, with
that release's own AmazonDynamoDbConversationMemoryDriver, Agent and OpenAiChatPromptDriver, and
the stored items (GetItem's `Item`, low-level DynamoDB JSON) are written to
DIR/<shape>/<session>.json, where <shape> is v0_27 (griptape <= 0.27), v0_30 (0.28-0.30) or v1
(0.31+ and 1.x); DIR/<shape>/griptape_version names the release.

Without --endpoint it starts tools/dynamodb_local.py (with .venv's python, which has moto) and a
table; without --model-url it starts tools/scripted_model.py. It stops what it started. Fails
(exit 1) unless every reply is the scripted model's expected answer (skip with --any-replies when
using a real model).

Only the standard library is needed to run this file itself.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

EXPECTED = {
    "user-id-123": ["Hello Collin! How can I assist you today?", "Your name is Collin."],
    "group-id-123": [
        "Hello Zach! How can I assist you today?",
        "Hello Matt! Nice to meet you too. How can I help you today?",
        "Hello Collin! So far, we have Zach, Matt, and now you. How can I assist you all today?",
    ],
}


class Server:
    """A helper server that prints `PORT <n>` and exits when its stdin closes."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv + ["--exit-with-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{argv[1]} did not start (printed {line!r})")
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", action="append", required=True, help="a griptape venv (repeatable)")
    parser.add_argument("--endpoint", help="a running DynamoDB endpoint (default: start a local one)")
    parser.add_argument("--table", default="griptape-fixtures", help="table (created when the endpoint is started here)")
    parser.add_argument("--model-url", help="OpenAI-compatible base URL (default: start the scripted model)")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "griptape"))
    parser.add_argument("--any-replies", action="store_true", help="do not check the replies")
    args = parser.parse_args()

    started = []
    try:
        endpoint = args.endpoint
        if not endpoint:
            moto_python = os.path.join(ROOT, ".venv", "bin", "python")
            server = Server([moto_python, os.path.join(ROOT, "tools", "dynamodb_local.py"), "--port", "0", "--table", args.table])
            started.append(server)
            endpoint = f"http://127.0.0.1:{server.port}"
        model_url = args.model_url
        if not model_url:
            server = Server([sys.executable, os.path.join(ROOT, "tools", "scripted_model.py"), "--port", "0"])
            started.append(server)
            model_url = f"http://127.0.0.1:{server.port}/v1"

        ok = True
        for venv in args.venv:
            ok &= play(venv, endpoint, args.table, model_url, args.out, check=not args.any_replies)
        return 0 if ok else 1
    finally:
        for server in started:
            server.stop()


def play(venv, endpoint, table, model_url, out, check) -> bool:
    python = os.path.join(venv, "bin", "python")
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.json")
        subprocess.run(
            [python, os.path.join(HERE, "play_walkthrough.py"), "--endpoint", endpoint, "--table", table,
             "--model-url", model_url, "--result", result_path],
            check=True,
        )
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)

    version, shape = result["griptape_version"], result["shape"]
    print(f"griptape {version} ({venv}) -> {shape}")
    good = True
    if check:
        for session_id, expected in EXPECTED.items():
            got = result["replies"][session_id]
            if got != expected:
                print(f"  {session_id}: replies {got!r}, expected {expected!r}", file=sys.stderr)
                good = False
    if not good:
        return False

    folder = os.path.join(out, shape)
    os.makedirs(folder, exist_ok=True)
    for session_id, item in result["items"].items():
        path = os.path.join(folder, f"{session_id}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(item, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"  wrote {os.path.relpath(path, ROOT)}")
    with open(os.path.join(folder, "griptape_version"), "w", encoding="utf-8") as f:
        f.write(f"griptape=={version}\n")
    return True


if __name__ == "__main__":
    sys.exit(main())
