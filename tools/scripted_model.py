#!/usr/bin/env python3
"""The scripted model: a TEST DOUBLE of an OpenAI-compatible chat server. It is not an LLM.

It answers from the conversation it is sent, so a right answer proves the history reached it:
it remembers names told earlier ("my name is X", "I'm X") and answers "what is my name?" and
"who all is here?" from them, wording its replies like the seed's walkthrough. Asked for a
running summary, it answers "People: A, B. Exchanges: N.", and it reads names back from such a
summary when one is sent as context.

    scripted_model.py [--port N] [--exit-with-stdin] [--first-token-delay S] [--word-delay S]
                      [--answer-delay S] [--tokenizer PATH | --no-tokenizer] [--usage MODE]

Token counts (the `usage` of every answer): by default with OpenAI's o200k_base encoding, through
tools/tokencount/target/release/tokencount (`make tokencount` builds it; --tokenizer PATH names
another build of it) when that binary exists; without it, or with --no-tokenizer, the old
estimate, max(1, characters // 4) per text. Prompt tokens are the sum over the messages of the
content's tokens plus 4 per message (the role and the message's framing, as OpenAI's own
accounting adds about 3-4); completion tokens are the reply's tokens.

What chat completions report as usage.prompt_tokens, --usage MODE, like servers (proxies, local
servers) whose counts cannot be right: `counted` (the default: the count above), `zero`,
`missing` (no usage at all), `constant:N` (N whatever the prompt), `factor:X` (X times the count,
rounded). Each request's record in /_requests carries the count itself either way.

A simulated provider prompt cache, reported in `usage`:
- chat completions, like OpenAI's automatic cache: per `prompt_cache_key` of the request (one
  cache for the requests without one), the prompts answered so far are remembered; a prompt's
  cached tokens are the tokens of its leading messages (role and content) identical to an
  earlier prompt's leading messages, up to the first message that differs, rounded down to a
  multiple of 128, and 0 under 1,024. Reported as usage.prompt_tokens_details.cached_tokens in
  the whole answer and in the streamed usage chunk.
- Bedrock Converse / ConverseStream, like its cache points: without `cachePoint` blocks (in
  `system` or in a message's content) nothing is cached. With them, the prefix up to the last
  cache point is read from the cache as far as it starts with a prefix an earlier request of the
  same model wrote (ended at one of its cache points): cacheReadInputTokens; the rest of it up to
  the last cache point is written: cacheWriteInputTokens; inputTokens is what follows. So an
  identical prefix seen before (at its last cache point) is read whole, a new one written whole.
  No per-model minimum size. Tokens are counted per block: a system text block is a message (its
  tokens + 4), a message's first block carries the message's 4.

Endpoints:
    POST /v1/chat/completions   the chat-completions protocol (also /chat/completions); with
                                "stream": true, server-sent events: the first word after
                                --first-token-delay (0.15 s), then one word every --word-delay
                                (0.02 s), a finish chunk, a usage-only chunk if asked for
                                (stream_options.include_usage), then [DONE]
                                With `tools` offered and a last message asking for "weather in
                                <Place>" (or tool_choice "required" / a named function), it
                                calls the first function (arguments: its first parameter set to
                                the place), streamed as tool_calls pieces; given the function's
                                result (a `tool` message), it reads the result back.
    POST /_script               queue faults for the next calls, e.g.
                                {"steps": [{"status": 500}, {"garbage": true}, {"hang": 5},
                                           {"empty": true}, {"length": true},
                                           {"status": 429, "retry_after": 0.1},
                                           {"reply": "exact text"},
                                           {"reply": "語", "repeat": 350000}]}
                                and for streamed answers, after N words:
                                {"cut_after": N} (the connection drops),
                                {"error_after": N} (an error inside the stream),
                                {"stall_after": N, "stall": S} (nothing for S seconds),
                                {"no_finish": true} (the stream ends without a finish reason),
                                {"first_token_delay": S, "word_delay": S}
    POST /model/{id}/converse   Amazon Bedrock's Converse API (a local stand-in for it)
    POST /model/{id}/converse-stream  Bedrock's ConverseStream, in AWS event-stream framing
    GET  /_requests             every chat request received so far (bodies, auth header, and
                                received_at; a streamed one also first_token_at and
                                last_token_at: time.monotonic() when its request came and its
                                first and last word were written); prompt_cache_key (from the
                                body, null when absent); summary (true for a running-summary
                                request); and, once answered, usage: the usage the answer
                                reports (or would, for a stream not asked to include it; null
                                with --usage missing), counted_prompt_tokens and
                                message_tokens (each message's count, framing included)

Prints `PORT <n>` once it accepts requests (port 0 picks a free one).
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
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


def is_summary_request(messages) -> bool:
    return any(SUMMARY_REQUEST in content_text(m.get("content"))
               for m in messages if m.get("role") == "system")


WEATHER = re.compile(r"\bweather in ([A-Z][\w-]*)")


def tool_call(body, messages):
    """A function call, when the request offers functions and its last message asks for one:
    "... weather in <Place>" (or any message, with tool_choice "required" or a named function).
    The call names the first function offered (or the one named), with its first parameter
    set to the place (or to the message). None when the model answers in text."""
    tools = [t.get("function") or {} for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or not messages or messages[-1].get("role") != "user":
        return None
    last = content_text(messages[-1].get("content"))
    asked = WEATHER.search(last)
    forced = choice == "required" or isinstance(choice, dict)
    if not asked and not forced:
        return None
    tool = tools[0]
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
        tool = next((t for t in tools if t.get("name") == named), tool)
    params = list(((tool.get("parameters") or {}).get("properties") or {}).keys()) or ["input"]
    value = asked.group(1) if asked else last
    return {"id": "call_" + uuid.uuid4().hex[:24], "name": tool.get("name", "f"),
            "arguments": json.dumps({params[0]: value})}


def tool_answer(messages):
    """The answer to a function's result: it reads the result back."""
    calls = {}
    for m in messages:
        for c in m.get("tool_calls") or []:
            calls[c.get("id")] = (c.get("function") or {}).get("name", "the function")
    results = [m for m in messages[::-1] if m.get("role") == "tool"]
    last = results[0]
    return f"{calls.get(last.get('tool_call_id'), 'The function')} says: {content_text(last.get('content'))}"


def answer(messages) -> str:
    if is_summary_request(messages):
        return summarize(messages)
    if messages and messages[-1].get("role") == "tool":
        return tool_answer(messages)
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


DEFAULT_TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "tokencount", "target", "release", "tokencount")


class Tokenizer:
    """o200k_base counts from one tokencount process (a JSON string a line in, a count a line
    out), asked one text at a time under a lock: the server is threaded. Counts are memoised
    (a long conversation sends the same messages again and again)."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        self.memo = {}
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, encoding="utf-8", bufsize=1)

    def count(self, text: str):
        """The text's token count, or None when the process cannot answer."""
        n = self.memo.get(text)
        if n is not None:
            return n
        with self.lock:
            if self.proc is None:
                return None
            try:
                self.proc.stdin.write(json.dumps(text) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
                n = int(line)
            except (OSError, ValueError):
                print(f"scripted_model: the tokenizer {self.path} stopped answering; "
                      "counting characters // 4 from now on", file=sys.stderr, flush=True)
                self.proc = None
                return None
        if n < 0:  # text tokencount could not read (e.g. a lone surrogate)
            return None
        if len(self.memo) > 100_000:
            self.memo.clear()
        self.memo[text] = n
        return n


TOKENIZER = None  # a Tokenizer, or None for the characters // 4 estimate


def tokens(text: str) -> int:
    if TOKENIZER is not None:
        n = TOKENIZER.count(text)
        if n is not None:
            return n
    return max(1, len(text) // 4)


def content_text(content) -> str:
    """A message's text: its content string, or the text of its content parts."""
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def message_tokens(m) -> int:
    return tokens(content_text(m.get("content"))) + 4


class PrefixCache:
    """Requests answered so far, as a trie of their units (messages, or Bedrock blocks): one
    trie per cache key. A node is a dict of children keyed by a unit's identity; a node whose
    prefix was written to the cache (Bedrock's cache points) carries WRITTEN."""

    WRITTEN = object()

    def __init__(self):
        self.roots = {}

    def walk(self, key, units):
        """Adds the units (identity, tokens) under `key`. Yields, for each unit, the node it
        ends at and whether that prefix had been seen before."""
        node, seen = self.roots.setdefault(key, {}), True
        for ident, _ in units:
            child = node.get(ident)
            if child is None:
                seen, child = False, {}
                node[ident] = child
            node = child
            yield node, seen


CACHE = PrefixCache()


def openai_cached_tokens(body, messages) -> int:
    """Cached tokens as OpenAI's automatic prompt cache reports them (see the docstring)."""
    units = [(json.dumps([m.get("role"), m.get("content")], sort_keys=True), message_tokens(m))
             for m in messages]
    shared = 0
    with STATE.lock:
        for (_, n), (_, seen) in zip(units, CACHE.walk(("openai", body.get("prompt_cache_key")), units)):
            if seen:
                shared += n
    if shared < 1024:
        return 0
    return shared // 128 * 128


def bedrock_cache(body, model_id):
    """(read, written) tokens of a Converse request's prefix up to its last cache point."""
    units, cache_points = [], []  # cache_points: how many units precede each cache point
    for block in body.get("system") or []:
        if "cachePoint" in block:
            cache_points.append(len(units))
        else:
            units.append((json.dumps(["system", block], sort_keys=True),
                          tokens(block.get("text") or "") + 4))
    for m in body.get("messages") or []:
        first = True
        for block in m.get("content") or []:
            if "cachePoint" in block:
                cache_points.append(len(units))
                continue
            units.append((json.dumps([m.get("role"), first, block], sort_keys=True),
                          tokens(block.get("text") or "") + (4 if first else 0)))
            first = False
    if not cache_points:
        return 0, 0
    prefix = units[:cache_points[-1]]
    total = sum(n for _, n in prefix)
    read = running = 0
    with STATE.lock:
        nodes = []
        for (_, n), (node, seen) in zip(prefix, CACHE.walk(("bedrock", model_id), prefix)):
            running += n
            nodes.append(node)
            if seen and PrefixCache.WRITTEN in node:
                read = running
        for at in cache_points:
            if at:
                nodes[at - 1][PrefixCache.WRITTEN] = True
    return read, total - read


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.steps = []
        self.requests = []
        self.first_token_delay = 0.15
        self.word_delay = 0.02
        self.answer_delay = 0.0
        self.usage = ("counted", None)  # --usage: (mode, its number)


STATE = State()


def parse_usage(mode: str):
    """--usage MODE as (mode, number); ValueError for anything else."""
    name, _, number = mode.partition(":")
    if name in ("counted", "zero", "missing") and not number:
        return name, None
    if name == "constant" and number:
        return name, int(number)
    if name == "factor" and number:
        return name, float(number)
    raise ValueError(mode)


def reported_prompt_tokens(counted: int):
    """The prompt tokens an answer reports, as --usage says; None for no usage at all."""
    mode, number = STATE.usage
    return {"counted": counted, "zero": 0, "missing": None,
            "constant": number, "factor": round(counted * (number or 0))}[mode]


def pieces(text: str):
    """The answer as it is streamed: word by word, each with the spaces after it."""
    return [p for p in re.findall(r"\S*\s*", text) if p]


class Streamer:
    """Writes a streamed answer word by word, as the step says, in HTTP/1.1 chunks. Each
    protocol gives the bytes of one word (`piece`), of a failure inside the stream (`failure`)
    and of the end (`end`)."""

    def __init__(self, handler, record, step):
        self.handler, self.record, self.step = handler, record, step

    def chunk(self, data: bytes):
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.handler.wfile.flush()

    def run(self, content_type, text, piece, failure, end):
        h, step = self.handler, self.step
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        time.sleep(float(step.get("first_token_delay", STATE.first_token_delay)))
        words = pieces(text)
        for i, word in enumerate(words):
            if i == step.get("cut_after"):
                h.close_connection = True  # no last chunk: the body is cut off
                return
            if i == step.get("error_after"):
                self.chunk(failure())
                break
            if i == step.get("stall_after"):
                time.sleep(float(step.get("stall", 30)))
            if i:
                time.sleep(float(step.get("word_delay", STATE.word_delay)))
            self.chunk(piece(word))
            now = time.monotonic()
            with STATE.lock:
                self.record.setdefault("first_token_at", now)
                self.record["last_token_at"] = now
        else:
            self.chunk(end())
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


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
        converse = re.fullmatch(r"/model/([^/]+)/converse(-stream)?", self.path)
        if converse:
            return self.converse(body, converse.group(1), bool(converse.group(2)))
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self.send_json(404, {"error": {"message": "not found"}})

        messages = body.get("messages") or []
        record = {"body": body, "authorization": self.headers.get("Authorization"),
                  "received_at": time.monotonic(), "prompt_cache_key": body.get("prompt_cache_key"),
                  "summary": is_summary_request(messages)}
        with STATE.lock:
            STATE.requests.append(record)
            step = STATE.steps.pop(0) if STATE.steps else {}
        if "hang" in step:
            time.sleep(float(step["hang"]))
        elif STATE.answer_delay and not body.get("stream"):
            time.sleep(STATE.answer_delay)  # a model's think time, for concurrency tests
        if "status" in step:
            headers = {}
            if "retry_after" in step:
                headers["Retry-After"] = str(step["retry_after"])
            return self.send_json(step["status"], {"error": {"message": "scripted failure"}}, headers)
        if step.get("garbage"):
            return self.send_json(200, b"<html>not a completion</html>")

        call = None if ("reply" in step or step.get("empty")) else tool_call(body, messages)
        text = "" if step.get("empty") else answer(messages)
        if call:
            # A call's text is its arguments: they stream in pieces, as a real server's do.
            text = call["arguments"]
            record["tool_call"] = call
        if "reply" in step:
            text = str(step["reply"]) * int(step.get("repeat", 1))
        finish = "stop"
        if step.get("length"):
            text, finish = text[: max(1, len(text) // 2)], "length"
        counts = [message_tokens(m) for m in messages]
        completion = tokens(text)
        cached = openai_cached_tokens(body, messages)
        prompt = reported_prompt_tokens(sum(counts))
        usage = None if prompt is None else {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt)}}
        with STATE.lock:
            record["usage"] = usage
            record["counted_prompt_tokens"], record["message_tokens"] = sum(counts), counts
        if call:
            finish = "tool_calls"
        if body.get("stream"):
            return self.stream_completion(record, step, body, text, finish, usage)
        message = {"role": "assistant", "content": text}
        if call:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"]}}]}
        answered = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        }
        if usage is not None:
            answered["usage"] = usage
        self.send_json(200, answered)


def stream_completion(self, record, step, body, text, finish, usage):
    """The chat-completions stream: a role chunk, a chunk a word, the finish, the usage."""
    ident, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())

    def event(choices, usage=None):
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created,
                 "model": body.get("model", "scripted"), "choices": choices}
        if usage is not None or (body.get("stream_options") or {}).get("include_usage"):
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    started = []

    call = record.get("tool_call")

    def piece(word):
        out = b""
        if call:
            # A function call: its id and name first, then its arguments piece by piece.
            first = {"index": 0, "function": {"arguments": word}}
            if not started:
                started.append(True)
                first = {"index": 0, "id": call["id"], "type": "function",
                         "function": {"name": call["name"], "arguments": word}}
            return event([{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}])
        if not started:
            started.append(True)
            out = event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        return out + event([{"index": 0, "delta": {"content": word}, "finish_reason": None}])

    def failure():
        return b"data: " + json.dumps({"error": {"message": "scripted failure mid-stream",
                                                 "type": "server_error"}}).encode() + b"\n\n"

    def end():
        if step.get("no_finish"):
            return b"data: [DONE]\n\n"
        out = event([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            out += event([], usage)
        return out + b"data: [DONE]\n\n"

    Streamer(self, record, step).run("text/event-stream", text, piece, failure, end)


Handler.stream_completion = stream_completion


def event_message(headers: dict, payload: dict) -> bytes:
    """One message of AWS's event-stream framing: prelude (lengths, CRC), string headers,
    JSON payload, message CRC."""
    encoded = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        encoded += bytes([len(n)]) + n + bytes([7]) + struct.pack(">H", len(v)) + v
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(encoded) + len(body) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + body
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_event(kind: str, payload: dict) -> bytes:
    return event_message({":event-type": kind, ":content-type": "application/json",
                          ":message-type": "event"}, payload)


def converse_stream(self, record, step, text, stop, usage):
    """Bedrock ConverseStream: messageStart, a contentBlockDelta a word, contentBlockStop,
    messageStop, metadata."""
    started = []

    def piece(word):
        out = b""
        if not started:
            started.append(True)
            out = bedrock_event("messageStart", {"role": "assistant"})
        return out + bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}})

    def failure():
        return event_message({":exception-type": "modelStreamErrorException",
                              ":content-type": "application/json", ":message-type": "exception"},
                             {"message": "scripted failure mid-stream"})

    def end():
        out = bedrock_event("contentBlockStop", {"contentBlockIndex": 0})
        if step.get("no_finish"):
            return out
        return out + bedrock_event("messageStop", {"stopReason": stop}) + bedrock_event(
            "metadata", {"usage": usage, "metrics": {"latencyMs": 1}})

    Streamer(self, record, step).run("application/vnd.amazon.eventstream", text, piece, failure, end)


Handler.converse_stream = converse_stream


BEDROCK_ERRORS = {400: "ValidationException", 403: "AccessDeniedException",
                  429: "ThrottlingException", 503: "ServiceUnavailableException"}


def converse(self, body, model_id, stream=False):
    """Bedrock Converse: the same answers, in Bedrock's request and response shapes."""
    messages = [{"role": "system", "content": block.get("text", "")}
                for block in body.get("system") or []]
    for m in body.get("messages") or []:
        text = "".join(block.get("text", "") for block in m.get("content") or [])
        messages.append({"role": m.get("role"), "content": text})
    record = {"body": body, "model": model_id, "path": self.path,
              "authorization": self.headers.get("Authorization"), "received_at": time.monotonic(),
              "summary": is_summary_request(messages)}
    with STATE.lock:
        STATE.requests.append(record)
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
    prompt = sum(message_tokens(m) for m in messages)
    completion = tokens(text)
    usage = {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}
    read, written = bedrock_cache(body, model_id)
    if read or written:
        # Bedrock's inputTokens are the tokens neither read from nor written to the cache.
        usage["inputTokens"] = max(0, prompt - read - written)
        usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"] = read, written
        usage["totalTokens"] = usage["inputTokens"] + read + written + completion
    with STATE.lock:
        record["usage"] = usage
    if stream:
        return self.converse_stream(record, step, text, stop, usage)
    content = [{"text": text}] if text else []
    self.send_json(200, {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": {"latencyMs": 1},
    })


Handler.converse = converse


def main() -> int:
    parser = argparse.ArgumentParser(description="scripted OpenAI-compatible test double")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-with-stdin", action="store_true")
    parser.add_argument("--first-token-delay", type=float, default=STATE.first_token_delay,
                        help="seconds before a streamed answer's first word")
    parser.add_argument("--word-delay", type=float, default=STATE.word_delay,
                        help="seconds between a streamed answer's words")
    parser.add_argument("--answer-delay", type=float, default=0.0,
                        help="seconds before every whole (non-streamed) answer")
    counting = parser.add_mutually_exclusive_group()
    counting.add_argument("--tokenizer", metavar="PATH",
                          help="the tokencount binary that counts usage tokens (o200k_base); "
                               "default: tools/tokencount/target/release/tokencount if built")
    counting.add_argument("--no-tokenizer", action="store_true",
                          help="count max(1, characters // 4) a text, as before the tokenizer")
    parser.add_argument("--usage", default="counted", metavar="MODE",
                        help="what usage.prompt_tokens reports: counted (default), zero, missing, "
                             "constant:N or factor:X")
    args = parser.parse_args()
    try:
        STATE.usage = parse_usage(args.usage)
    except ValueError:
        parser.error(f"--usage {args.usage}: counted, zero, missing, constant:N or factor:X")
    STATE.first_token_delay, STATE.word_delay = args.first_token_delay, args.word_delay
    STATE.answer_delay = args.answer_delay
    global TOKENIZER
    if args.tokenizer and not os.access(args.tokenizer, os.X_OK):
        parser.error(f"--tokenizer {args.tokenizer}: no such executable")
    path = args.tokenizer or (None if args.no_tokenizer else DEFAULT_TOKENIZER)
    if path and os.access(path, os.X_OK):
        try:
            TOKENIZER = Tokenizer(path)
            if TOKENIZER.count("") is None:  # ready before the port is announced
                raise OSError("it does not answer")
        except OSError as e:
            TOKENIZER = None
            if args.tokenizer:
                parser.error(f"--tokenizer {args.tokenizer}: {e}")
            print(f"scripted_model: {path}: {e}; counting characters // 4", file=sys.stderr, flush=True)
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
