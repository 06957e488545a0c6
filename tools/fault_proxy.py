#!/usr/bin/env python3
"""A fault-injecting HTTP reverse proxy for a DynamoDB-compatible server (tests only).

Put it in front of tools/dynamodb_local.py to see how the client copes when DynamoDB answers
late, drops the connection, or hangs.

    fault_proxy.py --upstream http://127.0.0.1:PORT [--host H] [--port N] [--exit-with-stdin]
                   [--record-bodies]

Every request except the control paths is forwarded to the upstream unchanged. Its operation is
the part of `X-Amz-Target` after the dot (`DynamoDB_20120810.PutItem` -> `PutItem`).

Control API (JSON):
    POST   /_faults  {"rules": [RULE, ...]} appends rules
    GET    /_faults  the rules still armed (`times` and `skip` count down)
    DELETE /_faults  clears all rules
    GET    /_log     [{"op": ..., "action": "forward" | ACTION, "status": int | null}, ...]
                     (`status`: the upstream's; with --record-bodies each entry also has
                     "request", the body as received, and "response", the body answered or
                     null, as UTF-8 text)
    DELETE /_log     clears the log
    GET    /_counts  {"total": n, "ops": {op: n}, "statuses": {op: {status: n}}}: the requests
                     of each operation since the start (or the last DELETE), whatever their fate,
                     and the statuses they were answered with ("none": dropped or hung up on)
    DELETE /_counts  clears the counts

RULE: {"op": "PutItem" | "*", "action": ACTION, "times": 1, "seconds": S, "match": "substring
of the body", "skip": 0, "status": 500, "body": "..."}. The first armed rule whose op (or "*")
and match apply to a request decides it: while its `skip` is above zero the request passes
untouched, then it fires `times` times (0 or less: forever) and is disarmed. ACTIONs:
    delay        forward, wait `seconds` (default 4) after the upstream answered, then answer
    drop_after   forward, then close the connection unanswered (the write landed)
    drop_before  close the connection unanswered, forwarding nothing
    hang         forward nothing, answer nothing for `seconds` (default 30), then close
    error        forward nothing, answer `status` (default 500) with `body`

Prints `PORT <n>` once it accepts connections (port 0 picks a free one). With --exit-with-stdin
it exits when its standard input closes, so a dying test harness never leaves it behind.
"""
import argparse
import http.client
import json
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ACTIONS = {"delay", "drop_after", "drop_before", "hang", "error"}
DEFAULT_SECONDS = {"delay": 4.0, "hang": 30.0}
DEFAULT_ERROR = ('{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
                 '"message":"injected"}')
# Hop-by-hop headers belong to one connection, not to the message (RFC 9110 7.6.1). Expect is
# dropped too: the handler already answered any 100-continue itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "proxy-connection", "expect"}
UPSTREAM_TIMEOUT = 60.0


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.log = []
        self.counts = {}  # op -> requests
        self.statuses = {}  # op -> {status: requests}
        self.record_bodies = False

    def decide(self, op, body):
        """Picks the rule for a request (None: forward) and logs the request, in one step."""
        with self.lock:
            chosen = None
            rule = next((r for r in self.rules
                         if r["op"] in ("*", op) and r["match"].encode() in body), None)
            if rule and rule["skip"] > 0:
                rule["skip"] -= 1
            elif rule:
                chosen = dict(rule)
                if rule["times"] == 1:
                    self.rules.remove(rule)
                elif rule["times"] > 1:  # 0 or less: forever
                    rule["times"] -= 1
            entry = {"op": op, "action": chosen["action"] if chosen else "forward", "status": None}
            if self.record_bodies:
                entry["request"] = body.decode("utf-8", errors="replace")
                entry["response"] = None
            self.log.append(entry)
            self.counts[op or "none"] = self.counts.get(op or "none", 0) + 1
            return chosen, entry

    def answered(self, entry, status, body=None, upstream=True):
        """Records the status a request was answered with (None: none, the connection was
        closed) and its body. The log's `status` stays the upstream's: None when the request
        was not forwarded (`upstream` False)."""
        with self.lock:
            if upstream and status is not None:
                entry["status"] = status
            if self.record_bodies and body is not None:
                entry["response"] = body.decode("utf-8", errors="replace")
            per = self.statuses.setdefault(entry["op"] or "none", {})
            key = "none" if status is None else str(status)
            per[key] = per.get(key, 0) + 1


STATE = State()


def connection_named(headers):
    """Headers a `Connection` header names are hop-by-hop as well."""
    return {v.strip().lower() for v in (headers.get("Connection") or "").split(",")} - {""}


def normalize(rule):
    if not isinstance(rule, dict) or rule.get("action") not in ACTIONS:
        raise ValueError(f"bad rule {rule!r}: action must be one of {sorted(ACTIONS)}")
    body, match = rule.get("body", DEFAULT_ERROR), rule.get("match") or ""
    if not isinstance(match, str):
        raise ValueError(f"bad rule {rule!r}: match must be a string")
    return {**rule,
            "op": rule.get("op", "*"),
            "match": match,
            "times": int(rule.get("times", 1)),
            "skip": int(rule.get("skip", 0)),
            "seconds": float(rule.get("seconds", DEFAULT_SECONDS.get(rule["action"], 0.0))),
            "status": int(rule.get("status", 500)),
            "body": body if isinstance(body, str) else json.dumps(body)}


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # bursts of concurrent test clients must not meet a full backlog

    def handle_error(self, request, client_address):
        # Clients that vanish (after a drop, or timing out during a delay) are expected here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave as separate writes; without TCP_NODELAY Nagle would hold the body
    # until the client's delayed ACK (~40 ms), latency the real service does not add.
    disable_nagle_algorithm = True
    upstream = None  # urlsplit() of --upstream, set in main()

    def log_message(self, *args):  # quiet: tests read stdout
        pass

    def dispatch(self):
        path = urlsplit(self.path).path
        if path in ("/_faults", "/_log", "/_counts"):
            return self.control(path)
        body = self.read_body()
        target = self.headers.get("X-Amz-Target")
        op = target.rsplit(".", 1)[-1] if target else None
        rule, entry = STATE.decide(op, body)
        action = rule["action"] if rule else "forward"
        if action == "drop_before":
            STATE.answered(entry, None, upstream=False)
            return self.drop()
        if action == "hang":
            self.hold(rule["seconds"])
            STATE.answered(entry, None, upstream=False)
            return self.drop()
        if action == "error":
            headers = [("Content-Type", "application/x-amz-json-1.0")]
            STATE.answered(entry, rule["status"], rule["body"].encode(), upstream=False)
            return self.answer(rule["status"], None, headers, rule["body"].encode())
        answer = self.forward(body)
        if answer is None:
            unreachable = b'{"message":"fault_proxy: upstream unreachable"}'
            STATE.answered(entry, 502, unreachable, upstream=False)
            return self.answer(502, None, [("Content-Type", "application/json")], unreachable)
        if action == "drop_after":
            STATE.answered(entry, None)
            with STATE.lock:
                entry["status"] = answer[0]
            return self.drop()
        STATE.answered(entry, answer[0], answer[3])
        if action == "delay":
            time.sleep(rule["seconds"])
        try:
            self.answer(*answer)
        except OSError:  # the client gave up waiting: nobody left to tell
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = dispatch  # no HEAD in DynamoDB

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def forward(self, body):
        """Sends the request upstream; (status, reason, headers, body), or None if unreachable."""
        up = self.upstream
        cls = http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        skip = HOP_BY_HOP | {"content-length"} | connection_named(self.headers)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        headers["Content-Length"] = str(len(body))  # the body as read, even if it came chunked
        conn = cls(up.hostname, up.port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request(self.command, up.path.rstrip("/") + self.path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            return None
        finally:
            conn.close()
        skip = HOP_BY_HOP | {"content-length"} | connection_named(resp.msg)  # answer() sets it
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in skip]
        return resp.status, resp.reason, kept, data

    def answer(self, status, reason, headers, body):
        self.send_response_only(status, reason)  # the upstream's own Date and Server pass through
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drop(self):
        """Closes the client connection with no answer, as a crashed server or network would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()

    def hold(self, seconds):
        """Stays silent for `seconds`, stopping early if the client hangs up first."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.connection], [], [], left)[0]:
                return
            try:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return  # the client closed its end
            except OSError:
                return
            time.sleep(max(0.0, deadline - time.monotonic()))  # pipelined bytes: keep silent

    def control(self, path):
        try:
            payload = json.loads(self.read_body() or b"{}")
            with STATE.lock:
                if (self.command, path) == ("POST", "/_faults"):
                    rules = [normalize(r) for r in payload.get("rules", [])]
                    STATE.rules.extend(rules)
                    result = {"added": len(rules), "armed": len(STATE.rules)}
                elif (self.command, path) == ("GET", "/_counts"):
                    result = json.dumps({"total": sum(STATE.counts.values()), "ops": STATE.counts,
                                         "statuses": STATE.statuses}).encode()
                elif (self.command, path) == ("DELETE", "/_counts"):
                    result = {"cleared": sum(STATE.counts.values())}
                    STATE.counts, STATE.statuses = {}, {}
                elif self.command == "GET":
                    result = STATE.rules if path == "/_faults" else STATE.log
                    result = json.dumps(result).encode()  # serialized under the lock
                elif self.command == "DELETE":
                    items = STATE.rules if path == "/_faults" else STATE.log
                    result = {"cleared": len(items)}
                    items.clear()
                else:
                    return self.send_json(405, {"message": f"{self.command} {path}: not allowed"})
        except (ValueError, TypeError, AttributeError) as e:
            return self.send_json(400, {"message": str(e)})
        self.send_json(200, result)

    def send_json(self, status, payload):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answer(status, None, [("Content-Type", "application/json")], body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-with-stdin", action="store_true")
    parser.add_argument("--record-bodies", action="store_true",
                        help="keep each request's and answer's body in the log (GET /_log)")
    args = parser.parse_args()
    STATE.record_bodies = args.record_bodies
    Handler.upstream = urlsplit(args.upstream)
    if Handler.upstream.scheme not in ("http", "https") or not Handler.upstream.hostname:
        parser.error(f"--upstream must be an http(s) URL, not {args.upstream!r}")
    server = Server((args.host, args.port), Handler)
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
