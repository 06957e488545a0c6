#!/usr/bin/env python3
"""The scripted model: a TEST DOUBLE of an OpenAI-compatible chat server. It is not an LLM.

It answers from the conversation it is sent, so a right answer proves the history reached it:
it remembers names told earlier ("my name is X", "I'm X") and answers "what is my name?" and
"who all is here?" from them, wording its replies like the seed's walkthrough. Asked for a
running summary, it answers "People: A, B. Exchanges: N.", and it reads names back from such a
summary when one is sent as context.

    scripted_model.py [--port N] [--exit-with-stdin]

Endpoints:
    POST /v1/chat/completions   the chat-completions protocol (also /chat/completions)
    POST /_script               queue faults for the next calls, e.g.
                                {"steps": [{"status": 500}, {"garbage": true}, {"hang": 5},
                                           {"empty": true}, {"length": true},
                                           {"status": 429, "retry_after": 0.1},
                                           {"reply": "exact text"},
                                           {"reply": "語", "repeat": 350000}]}
    POST /model/{id}/converse   Amazon Bedrock's Converse API (a local stand-in for it)
    GET  /_requests             every chat request received so far (bodies and auth header)

Prints `PORT <n>` once it accepts requests (port 0 picks a free one).
"""
import argparse
import json
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = r"([A-Z][A-Za-z'-]*)"
INTRODUCTIONS = [
    re.compile(r"\bmy name is " + NAME),
    re.compile(r"\bI'?m " + NAME),
    re.compile(r"\bI am " + NAME),
    re.compile(r"\bcall me " + NAME, re.IGNORECASE),
]
ASKS_NAME = re.compile(r"\b(what'?s|what is) my name\b|\bwho am i\b", re.IGNORECASE)
ASKS_WHO = re.compile(r"\bwho\b.*\b(here|all)\b", re.IGNORECASE)


def introduced(text: str):
    for pattern in INTRODUCTIONS:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def listing(names):
    return ", ".join(names)


SUMMARY_REQUEST = "running summary"
SUMMARY_CONTEXT = "Summary of the earlier conversation:"
PEOPLE = re.compile(r"People: ([^.]*)\.")


def summarized_names(text: str):
    m = PEOPLE.search(text)
    return [n.strip() for n in m.group(1).split(",") if n.strip()] if m else []


def summarize(messages) -> str:
    """Answers a summary request: the people named so far and how many exchanges were folded."""
    text = "\n".join(m.get("content") or "" for m in messages if m.get("role") == "user")
    names = summarized_names(text)
    exchanges = 0
    m = re.search(r"Exchanges: (\d+)\.", text)
    if m:
        exchanges = int(m.group(1))
    for line in text.splitlines():
        if line.startswith("User: "):
            exchanges += 1
            name = introduced(line[len("User: "):])
            if name and name not in names:
                names.append(name)
    return f"People: {', '.join(names)}. Exchanges: {exchanges}."


def answer(messages) -> str:
    if any(SUMMARY_REQUEST in (m.get("content") or "") for m in messages if m.get("role") == "system"):
        return summarize(messages)
    said = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    if not said:
        return "Hello! How can I assist you today?"
    last, earlier = said[-1], said[:-1]
    known = []
    for m in messages:
        if m.get("role") == "system" and (m.get("content") or "").startswith(SUMMARY_CONTEXT):
            known.extend(n for n in summarized_names(m["content"]) if n not in known)
    for text in earlier:
        name = introduced(text)
        if name and name not in known:
            known.append(name)
    name = introduced(last)
    others = [n for n in known if n != name]

    if ASKS_NAME.search(last):
        return f"Your name is {known[-1]}." if known else "I don't know your name yet."
    if ASKS_WHO.search(last):
        if name and others:
            return (f"Hello {name}! So far, we have {listing(others)}, and now you. "
                    "How can I assist you all today?")
        if known:
            return f"So far, we have {listing(known)}."
        return "I don't know anyone here yet."
    if name:
        if others:
            return f"Hello {name}! Nice to meet you too. How can I help you today?"
        return f"Hello {name}! How can I assist you today?"
    return f"You said: {last} (I remember {len(earlier)} earlier messages.)"


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.steps = []
        self.requests = []


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave as two writes: without TCP_NODELAY, Nagle holds the body until the
    # client's delayed ACK (~40 ms), a latency no real model server adds.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet: tests read stdout
        pass

    def send_json(self, status, payload, headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        if self.path == "/_requests":
            with STATE.lock:
                self.send_json(200, STATE.requests)
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        try:
            body = self.read_json()
        except ValueError:
            return self.send_json(400, {"error": {"message": "invalid JSON"}})
        if self.path == "/_script":
            with STATE.lock:
                STATE.steps.extend(body.get("steps", []))
            return self.send_json(200, {"queued": len(body.get("steps", []))})
        converse = re.fullmatch(r"/model/([^/]+)/converse", self.path)
        if converse:
            return self.converse(body, converse.group(1))
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self.send_json(404, {"error": {"message": "not found"}})

        with STATE.lock:
            STATE.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
            step = STATE.steps.pop(0) if STATE.steps else {}
        if "hang" in step:
            time.sleep(float(step["hang"]))
        if "status" in step:
            headers = {}
            if "retry_after" in step:
                headers["Retry-After"] = str(step["retry_after"])
            return self.send_json(step["status"], {"error": {"message": "scripted failure"}}, headers)
        if step.get("garbage"):
            return self.send_json(200, b"<html>not a completion</html>")

        messages = body.get("messages") or []
        text = "" if step.get("empty") else answer(messages)
        if "reply" in step:
            text = str(step["reply"]) * int(step.get("repeat", 1))
        finish = "stop"
        if step.get("length"):
            text, finish = text[: max(1, len(text) // 2)], "length"
        prompt = sum(tokens(m.get("content") or "") + 4 for m in messages)
        self.send_json(200, {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": tokens(text),
                      "total_tokens": prompt + tokens(text)},
        })


BEDROCK_ERRORS = {400: "ValidationException", 403: "AccessDeniedException",
                  429: "ThrottlingException", 503: "ServiceUnavailableException"}


def converse(self, body, model_id):
    """Bedrock Converse: the same answers, in Bedrock's request and response shapes."""
    messages = [{"role": "system", "content": block.get("text", "")}
                for block in body.get("system") or []]
    for m in body.get("messages") or []:
        text = "".join(block.get("text", "") for block in m.get("content") or [])
        messages.append({"role": m.get("role"), "content": text})
    with STATE.lock:
        STATE.requests.append({"body": body, "model": model_id, "path": self.path,
                               "authorization": self.headers.get("Authorization")})
        step = STATE.steps.pop(0) if STATE.steps else {}
    if "hang" in step:
        time.sleep(float(step["hang"]))
    if "status" in step:
        kind = BEDROCK_ERRORS.get(step["status"], "InternalServerException")
        return self.send_json(step["status"], {"message": "scripted failure"},
                              {"x-amzn-ErrorType": kind})
    if step.get("garbage"):
        return self.send_json(200, b"<html>not a converse answer</html>")
    text = "" if step.get("empty") else answer(messages)
    stop = "end_turn"
    if step.get("length"):
        text, stop = text[: max(1, len(text) // 2)], "max_tokens"
    prompt = sum(tokens(m["content"]) + 4 for m in messages)
    content = [{"text": text}] if text else []
    self.send_json(200, {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": prompt, "outputTokens": tokens(text),
                  "totalTokens": prompt + tokens(text)},
        "metrics": {"latencyMs": 1},
    })


Handler.converse = converse


def main() -> int:
    parser = argparse.ArgumentParser(description="scripted OpenAI-compatible test double")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-with-stdin", action="store_true")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    if args.exit_with_stdin:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sys.stdin.read()
        os._exit(0)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
