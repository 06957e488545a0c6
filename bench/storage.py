#!/usr/bin/env python3
"""`make bench-storage`: what a turn costs the DynamoDB table, and how a busy group thread fares.

Runs session-chat's release binary (built as bench.py builds it, CARGO_TARGET_DIR=target/bench,
unless --no-build or --binary PATH) against the local DynamoDB-compatible server
(tools/dynamodb_local.py, moto, one request at a time) reached through tools/fault_proxy.py,
which counts every table call per operation (GET /_counts) and, for the cost run, keeps each
request's and answer's body (--record-bodies). Nothing here knows the storage layout: every
figure comes from the calls the function makes and from the table's items, so the bench stays
valid when the layout changes.

Busy group: one session, --burst turns (64) with different messages, as that many people in one
group thread, all at once through --processes (2) function processes of --workers (32) workers
each (AWS_LAMBDA_MAX_CONCURRENCY; tools/concurrent_runtime.py drives each, both handing out their
events at the same instant), a scripted model answering every call after --model-seconds (1 s).
  answered, 503s   statuses of the answers; the error codes of the 503s
  wall             from the burst's start to the last answer
  latency          per turn, from its event being handed out to its answer: p50 and max
  table calls      every request the proxy saw during the burst, in total and per turn sent,
                   by operation
  stored           after the burst, the session's runs read back through the function
                   (GET /sessions/{id}, paged, via a fresh process): unique run ids, duplicates,
                   and whether every answered turn's run_id is stored exactly once
  goals            64/64 answered, every run stored once, every answer within 3 s of the start,
                   at most 4 table calls a turn: printed MET or MISSED (a missed goal does not
                   fail the bench; a server or function that does not start does)

Cost per turn: one writer, --turns (200; 50 with --quick) turns one after another on a fresh
session with the function's default settings, messages of ~1 KB that the scripted model echoes
(so ~2 KB a turn). For every turn, from the proxy's log of the turn's calls, and a Scan of the
table straight from the server (not through the proxy) after it:
  read units       per call, consistent reads 1 unit per 4 KB (eventual: half): GetItem of the
                   item returned (1 unit minimum, also when there is none), BatchGetItem per key,
                   Query and Scan of the total returned, TransactGetItems twice
  write units      per item written, 1 unit per 1 KB of the larger of its old and new size
                   (DeleteItem: of the old), UpdateItem likewise for the whole item,
                   TransactWriteItems twice that per item; a write refused by its condition (or
                   a cancelled transaction) is billed as if it had been written; writes to
                   global secondary indexes are left out (counted: indexed_item_writes; the
                   bench's sessions have no owner, so no index entry)
  item size        attribute name bytes + value sizes: S its UTF-8 bytes, N ceil(digits/2)+1,
                   L 3 + (1 + element) each, M 3 + (1 + name + value) each, B its bytes, sets
                   their members, anything else 1: tests/it/storage.rs `billed_size`'s rule
  old size         the item's size in the Scan after the previous turn, or as the turn's own
                   earlier calls left it; new size: PutItem's item, or for UpdateItem the item
                   in the Scan after the turn (an item updated twice in one turn is counted at
                   its old size the first time: reported as `updates_sized_approximately`;
                   but an update that only appends to a list, as a live reply's pieces do, at
                   its old size plus what it appends)
Figures at turns 1, 50 and 200 and the mean over the turns: read units, write units, bytes of
the items written, table calls by operation, the session item's size. The server's ConsumedCapacity
is probed first (two items of very different sizes) and recorded, not used: moto 5 reports a
constant per call whatever the item's size (the probe says so if that ever changes).

Writes bench/storage.json and prints a table. Stops everything it starts.

    storage.py [--quick] [--turns 200] [--burst 64] [--processes 2] [--workers 32]
               [--model-seconds 1] [--no-build] [--binary PATH] [--env NAME=VALUE ...]
               [--out bench/storage.json]

`make bench-quotas` runs it with both quotas on (limits no turn reaches), to bench/quotas.json:
the cost of the counters, beside storage.json's figures without them.
"""
import argparse
import base64
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (Servers, function_env, cargo_env, timed_run, percentile, TOOLS_PY)
from runtime_api import RuntimeApi  # noqa: E402

BINARY = bench.TARGET / "release" / "session-chat"
LOGS = bench.TARGET / "logs"
BURST_TABLE, COST_TABLE, PROBE_TABLE = "storage-burst", "storage-cost", "storage-probe"
GOAL_WALL_S, GOAL_CALLS_PER_TURN = 3.0, 4.0
REPORT_TURNS = (1, 50, 200)
CHAT = json.loads((ROOT / "events" / "http-api" / "1-collin-hello.json").read_text())
GET = json.loads((ROOT / "events" / "http-api" / "get-session.json").read_text())


def log(text):
    print(text, file=sys.stderr, flush=True)


# ---- events and helpers -----------------------------------------------------------------------

def chat_event(session: str, request_id: str, text: str) -> dict:
    body = json.dumps({"session_id": session, "message": text})
    e = json.loads(json.dumps(CHAT))
    e["body"] = body
    e["headers"]["content-length"] = str(len(body))
    e["requestContext"]["requestId"] = request_id
    return e


def history_event(session: str, request_id: str, cursor=None) -> dict:
    params = {"limit": "200"} | ({"cursor": cursor} if cursor else {})
    e = json.loads(json.dumps(GET))
    path = f"/sessions/{session}"
    e["rawPath"] = e["requestContext"]["http"]["path"] = path
    e["rawQueryString"] = "&".join(f"{k}={urllib.request.quote(v, safe='')}" for k, v in params.items())
    e["queryStringParameters"] = params
    e["pathParameters"] = {"session_id": session}
    e["requestContext"]["requestId"] = request_id
    return e


def group_message(i: int) -> str:
    # No introductions ("I'm X"): the scripted model would answer them differently, no matter.
    return f"Member {i} here: message {i} for the group, about the picnic on Saturday at noon."


def cost_message(turn: int) -> str:
    return f"turn {turn}: " + "ipsum " * 165  # ~1 KB; the scripted model echoes it


EXTRA_ENV = {}  # --env NAME=VALUE: settings of every function the bench runs


def function_env(db_port, model_port, table):
    env = bench.function_env(db_port, model_port, {"TABLE_NAME": table})
    env.pop("HISTORY_TOKEN_BUDGET")  # the function's default
    env.update(EXTRA_ENV)
    return env


def tables(layout):
    """The burst's and the cost run's tables of one storage layout."""
    return f"{BURST_TABLE}-{layout}", f"{COST_TABLE}-{layout}"


def control(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def answer_of(inv):
    """(status, parsed body) of a buffered API Gateway answer."""
    response = json.loads(inv.body or b"null") or {}
    try:
        body = json.loads(response.get("body") or "null")
    except ValueError:
        body = response.get("body")
    return response.get("statusCode"), body


class Function:
    """One function process under its own local Runtime API, invoked one event at a time."""

    def __init__(self, binary, env, logfile):
        self.api = RuntimeApi()
        self.out = open(logfile, "ab")
        self.proc = subprocess.Popen([str(binary)], cwd=ROOT, stdout=self.out,
                                     stderr=subprocess.STDOUT,
                                     env=dict(env, AWS_LAMBDA_RUNTIME_API=self.api.address))
        try:
            self.api.wait_ready(self.proc)
        except Exception:
            self.close()
            raise

    def invoke(self, event, timeout=60):
        return answer_of(self.api.invoke(event, timeout=timeout))

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.api.close()
        self.out.close()


def dynamodb(port):
    import boto3  # in .venv with moto

    return boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")


# ---- item sizes and units ---------------------------------------------------------------------

def value_size(v) -> int:
    (kind, x), = v.items()
    if kind == "S":
        return len(x.encode())
    if kind == "N":
        return -(-len(x) // 2) + 1
    if kind == "B":
        return len(x) if isinstance(x, bytes) else len(base64.b64decode(x))
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in x)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(e) for k, e in x.items())
    if kind == "SS":
        return sum(len(e.encode()) for e in x)
    if kind == "NS":
        return sum(-(-len(e) // 2) + 1 for e in x)
    if kind == "BS":
        return sum(value_size({"B": e}) for e in x)
    return 1  # BOOL, NULL


def item_size(item) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in (item or {}).items())


def read_units(size: int, consistent: bool) -> float:
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


def write_units(old: int, new: int) -> int:
    return max(1, math.ceil(max(old, new) / 1024))


class Table:
    """The table's key attributes and its items' sizes, read straight from the server."""

    def __init__(self, client, name):
        self.client, self.name = client, name
        desc = client.describe_table(TableName=name)["Table"]
        self.key_names = [k["AttributeName"] for k in desc["KeySchema"]]
        self.index_keys = [[k["AttributeName"] for k in g["KeySchema"]]
                           for g in desc.get("GlobalSecondaryIndexes", [])]

    def indexed(self, item) -> bool:
        """Whether the item has an entry in a global secondary index (billed apart)."""
        return any(all(k in (item or {}) for k in keys) for keys in self.index_keys)

    def key(self, item) -> str:
        return json.dumps({k: item.get(k) for k in self.key_names}, sort_keys=True, default=str)

    def scan(self) -> dict:
        """key -> (billed size, item) of every item."""
        out, start = {}, None
        while True:
            page = self.client.scan(TableName=self.name, ConsistentRead=True,
                                    **({"ExclusiveStartKey": start} if start else {}))
            for item in page["Items"]:
                out[self.key(item)] = (item_size(item), item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return out


APPEND = re.compile(r"SET (#\w+) = list_append\(\1, (:\w+)\)")


def appended_bytes(req):
    """What an UpdateItem of `SET #a = list_append(#a, :v)` alone adds to its item (a live
    reply's pieces, docs/storage.md): 1 + the size of each element; None for any other update."""
    m = APPEND.fullmatch((req.get("UpdateExpression") or "").strip())
    if m is None:
        return None
    values = (req.get("ExpressionAttributeValues") or {}).get(m.group(2), {}).get("L")
    if values is None:
        return None
    return sum(1 + value_size(v) for v in values)


def billed_failure(resp) -> bool:
    """A write DynamoDB still bills: refused by its condition, or a cancelled transaction."""
    kind = (resp or {}).get("__type", "") if isinstance(resp, dict) else ""
    return kind.endswith("ConditionalCheckFailedException") or kind.endswith("TransactionCanceledException")


def writes_of(op, req):
    """The items a write call touches: [(kind, key item, new item or None)]."""
    if op == "PutItem":
        return [("put", req["Item"], req["Item"])]
    if op == "UpdateItem":
        return [("update", req["Key"], None)]
    if op == "DeleteItem":
        return [("delete", req["Key"], None)]
    if op == "BatchWriteItem":
        out = []
        for reqs in req.get("RequestItems", {}).values():
            for r in reqs:
                if "PutRequest" in r:
                    out.append(("put", r["PutRequest"]["Item"], r["PutRequest"]["Item"]))
                elif "DeleteRequest" in r:
                    out.append(("delete", r["DeleteRequest"]["Key"], None))
        return out
    if op == "TransactWriteItems":
        out = []
        for t in req.get("TransactItems", []):
            if "Put" in t:
                out.append(("put", t["Put"]["Item"], t["Put"]["Item"]))
            elif "Update" in t:
                out.append(("update", t["Update"]["Key"], None))
            elif "Delete" in t:
                out.append(("delete", t["Delete"]["Key"], None))
            elif "ConditionCheck" in t:
                out.append(("check", t["ConditionCheck"]["Key"], None))
        return out
    return []


def bill_turn(entries, before, after, table, after_items):
    """Units, bytes written and calls of one turn's logged calls; `before` and `after` are the
    table's sizes (key -> size) around the turn, `after_items` its items after it. Returns
    (figures, sizes as billed)."""
    sizes = dict(before)
    indexed = 0  # writes of items with an index entry: their index writes are not in `wcu`
    parsed = []
    for e in entries:
        req = json.loads(e.get("request") or "{}")
        try:
            resp = json.loads(e["response"]) if e.get("response") else None
        except ValueError:
            resp = None
        parsed.append((e["op"], e["status"], req, resp))
    last_write = {}  # key -> the call that writes it last in the turn
    for i, (op, _, req, _) in enumerate(parsed):
        for _, key_item, _ in writes_of(op, req):
            last_write[table.key(key_item)] = i
    rcu = wcu = 0.0
    written = approx = 0
    calls = Counter()
    for i, (op, status, req, resp) in enumerate(parsed):
        calls[op or "none"] += 1
        ok = status == 200
        if op == "GetItem" and ok:
            rcu += read_units(item_size(resp.get("Item")), bool(req.get("ConsistentRead")))
        elif op == "BatchGetItem" and ok:
            for name, spec in req.get("RequestItems", {}).items():
                got = {table.key(it): item_size(it) for it in resp.get("Responses", {}).get(name, [])}
                skipped = {table.key(k) for k in resp.get("UnprocessedKeys", {}).get(name, {}).get("Keys", [])}
                for k in spec.get("Keys", []):
                    if table.key(k) not in skipped:
                        rcu += read_units(got.get(table.key(k), 0), bool(spec.get("ConsistentRead")))
        elif op in ("Query", "Scan") and ok:
            consistent = bool(req.get("ConsistentRead")) and not req.get("IndexName")
            rcu += read_units(sum(item_size(it) for it in resp.get("Items", [])), consistent)
        elif op == "TransactGetItems" and ok:
            for it in resp.get("Responses", []):
                rcu += 2 * read_units(item_size(it.get("Item")), True)
        writes = writes_of(op, req)
        if not writes or not (ok or billed_failure(resp)):
            continue
        unprocessed = set()
        if op == "BatchWriteItem" and ok:
            for reqs in (resp or {}).get("UnprocessedItems", {}).values():
                for r in reqs:
                    k = r.get("PutRequest", {}).get("Item") or r.get("DeleteRequest", {}).get("Key")
                    unprocessed.add(table.key(k))
        factor = 2 if op == "TransactWriteItems" else 1
        for kind, key_item, new_item in writes:
            key = table.key(key_item)
            if key in unprocessed:
                continue
            old = sizes.get(key, 0)
            if kind == "put":
                new = item_size(new_item)
            elif kind == "update":
                grown = appended_bytes(req)
                if last_write[key] == i:
                    new = after.get(key, 0)
                elif grown is not None:
                    new = old + grown
                else:
                    new, approx = old, approx + 1
            else:  # delete, check
                new = 0 if kind == "delete" else old
            units = write_units(old, new) if kind != "delete" else write_units(old, 0)
            wcu += factor * units
            if ok:
                if kind == "delete":
                    sizes.pop(key, None)
                else:
                    sizes[key] = new
                if kind in ("put", "update"):
                    written += new
                    if table.indexed(new_item if kind == "put" else after_items.get(key)):
                        indexed += 1
    return {"rcu": rcu, "wcu": wcu, "bytes_written": written, "calls": dict(calls),
            "updates_sized_approximately": approx, "indexed_item_writes": indexed}, sizes


def probe_consumed_capacity(client) -> dict:
    """Whether the server's ConsumedCapacity grows with the item (DynamoDB's does)."""
    seen = {}
    for n in (100, 20_000):
        put = client.put_item(TableName=PROBE_TABLE, Item={"id": {"S": f"p{n}"}, "v": {"S": "x" * n}},
                              ReturnConsumedCapacity="TOTAL")
        get = client.get_item(TableName=PROBE_TABLE, Key={"id": {"S": f"p{n}"}}, ConsistentRead=True,
                              ReturnConsumedCapacity="TOTAL")
        seen[n] = {"put": (put.get("ConsumedCapacity") or {}).get("CapacityUnits"),
                   "get": (get.get("ConsumedCapacity") or {}).get("CapacityUnits")}
    # DynamoDB: 1 WCU / 1 RCU for 100 bytes, 20 WCU / 5 RCU for ~20 KB.
    size_based = (seen[100]["put"] is not None and seen[20_000]["put"] is not None
                  and seen[20_000]["put"] > seen[100]["put"]
                  and (seen[20_000]["get"] or 0) > (seen[100]["get"] or 0))
    return {"put_get_100_bytes": seen[100], "put_get_20000_bytes": seen[20_000],
            "size_based": size_based,
            "note": ("the server's figures grow with the item (not used here: units are computed "
                     "from item sizes; compare before relying on either)" if size_based else
                     "the server reports the same units whatever the item's size: not used; "
                     "units are computed from item sizes")}


# ---- busy group -------------------------------------------------------------------------------

def run_burst(a, binary, servers, db, run_id, layout) -> dict:
    burst_table = tables(layout)[0]
    model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py",
                          "--answer-delay", a.model_seconds)
    proxy = servers.start(bench.TOOLS_PY, ROOT / "tools" / "fault_proxy.py",
                          "--upstream", f"http://127.0.0.1:{db}")
    session = f"group-{run_id}"
    events = [chat_event(session, f"{session}-{i}", group_message(i)) for i in range(a.burst)]
    per = -(-a.burst // a.processes)
    shares = [events[k * per:(k + 1) * per] for k in range(a.processes)]
    env = function_env(proxy, model, burst_table)
    start_at = time.time() + 3.0  # both processes are up and polling by then
    log(f"busy group: {a.burst} turns on one session through {a.processes} processes x "
        f"{a.workers} workers, the model answering after {a.model_seconds:g} s")
    reports, errors = [None] * a.processes, [None] * a.processes

    def drive(k):
        proc = subprocess.run(
            [str(bench.TOOLS_PY), ROOT / "tools" / "concurrent_runtime.py", "--binary", str(binary),
             "--workers", str(a.workers), "--start-at", repr(start_at), "--timeout", "120"],
            input=json.dumps(shares[k]), capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            errors[k] = f"concurrent_runtime.py exited {proc.returncode}: {proc.stderr[-2000:]}"
        else:
            reports[k] = json.loads(proc.stdout)

    control(proxy, "DELETE", "/_counts")
    threads = [threading.Thread(target=drive, args=(k,)) for k in range(a.processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(errors):
        raise RuntimeError("; ".join(e for e in errors if e))
    counts = control(proxy, "GET", "/_counts")
    with open(LOGS / "storage-burst.log", "w") as f:
        for r in reports:
            for line in r["logs"]:
                f.write(json.dumps(line) + "\n")

    invocations = [i for r in reports for i in r["invocations"]]
    start = min(r["started_at"] for r in reports)
    statuses, codes, answered = Counter(), Counter(), []
    for inv in invocations:
        statuses[str(inv["status"])] += 1
        try:
            body = json.loads(inv["body"]) if isinstance(inv["body"], str) else inv["body"]
        except ValueError:
            body = None
        if inv["status"] == 200:
            answered.append((body or {}).get("run_id"))
        elif inv["status"] == 503:
            codes[((body or {}).get("error") or {}).get("code", "?")] += 1
    done = [inv["done_at"] for inv in invocations if inv.get("done_at") is not None]
    latency = sorted(inv["seconds"] for inv in invocations if inv.get("seconds") is not None)
    ok_latency = sorted(inv["seconds"] for inv in invocations
                        if inv["status"] == 200 and inv.get("seconds") is not None)
    last_answer = max((inv["done_at"] for inv in invocations if inv["status"] == 200), default=None)

    # The runs stored, read back through the function (these reads are not in the counts above).
    stored_runs = read_history(binary, function_env(proxy, model, burst_table), session)
    stored = Counter(r.get("id") for r in stored_runs)
    inputs = Counter(r.get("input") for r in stored_runs)
    once = [rid for rid in answered if rid and stored[rid] == 1]
    servers.stop(proxy)
    servers.stop(model)
    ops = counts["ops"]
    levels = Counter(str(line.get("level", "raw")) for r in reports for line in r["logs"])
    return {
        "turns": a.burst, "processes": a.processes, "workers": a.workers,
        "model_seconds": a.model_seconds,
        "start_skew_ms": round((max(r["started_at"] for r in reports) - start) * 1000, 1),
        "statuses": dict(statuses), "answered": statuses.get("200", 0),
        "errors_503": dict(codes),
        "other_statuses": {s: n for s, n in statuses.items() if s not in ("200", "503")},
        "wall_s_to_last_answer": round(last_answer - start, 3) if last_answer else None,
        "wall_s_to_last_reply_of_any_status": round(max(done) - start, 3) if done else None,
        "latency_s": {"p50": round(statistics.median(latency), 3), "max": round(latency[-1], 3),
                      "n": len(latency)} if latency else None,
        "latency_s_answered": {"p50": round(statistics.median(ok_latency), 3),
                               "max": round(ok_latency[-1], 3), "n": len(ok_latency)}
        if ok_latency else None,
        "table_calls": counts["total"], "table_calls_by_op": ops,
        "table_call_statuses": counts["statuses"],
        "table_calls_per_turn": round(counts["total"] / a.burst, 2),
        "table_calls_per_turn_by_op": {op: round(n / a.burst, 2) for op, n in ops.items()},
        "table_calls_per_answered_turn": round(counts["total"] / len(answered), 2) if answered else None,
        "stored_runs": len(stored_runs), "stored_unique_run_ids": len(stored),
        "stored_duplicate_run_ids": sum(n - 1 for n in stored.values() if n > 1),
        "stored_duplicate_inputs": sum(n - 1 for n in inputs.values() if n > 1),
        "answered_stored_once": len(once),
        "answered_not_stored": sum(1 for rid in answered if not stored.get(rid)),
        "stored_not_answered": sum(1 for rid in stored if rid not in set(answered)),
        "function_log_levels": dict(levels),
    }


def read_history(binary, env, session) -> list:
    """Every stored run of the session, oldest first, through GET /sessions/{id}."""
    fn = Function(binary, env, LOGS / "storage-history.log")
    runs, cursor = [], None
    try:
        for page in range(1000):
            status, body = fn.invoke(history_event(session, f"history-{page}", cursor))
            if status == 404:
                return runs
            if status != 200:
                raise RuntimeError(f"GET /sessions/{session}: {status} {body}")
            runs.extend(body.get("runs", []))
            cursor = body.get("next_cursor")
            if not cursor:
                return runs
    finally:
        fn.close()
    raise RuntimeError("GET /sessions: more than 1000 pages")


def burst_goals(b) -> dict:
    every = b["answered"] == b["turns"]
    return {
        f"{b['turns']}/{b['turns']} answered": every,
        "every turn's run stored exactly once": (b["answered_stored_once"] == b["answered"] == b["turns"]
                                  and b["stored_duplicate_run_ids"] == 0
                                  and b["stored_runs"] == b["turns"]),
        f"all within {GOAL_WALL_S:g} s of the burst start": bool(
            every and b["wall_s_to_last_answer"] is not None
            and b["wall_s_to_last_answer"] <= GOAL_WALL_S),
        f"at most {GOAL_CALLS_PER_TURN:g} table calls a turn": b["table_calls_per_turn"] <= GOAL_CALLS_PER_TURN,
    }


# ---- cost per turn ----------------------------------------------------------------------------

def run_cost(a, binary, servers, db, run_id, layout) -> dict:
    cost_table = tables(layout)[1]
    model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py")
    proxy = servers.start(bench.TOOLS_PY, ROOT / "tools" / "fault_proxy.py",
                          "--upstream", f"http://127.0.0.1:{db}", "--record-bodies")
    table = Table(dynamodb(db), cost_table)
    session = f"cost-{run_id}"
    session_key = table.key({table.key_names[0]: {"S": session}})
    log(f"cost per turn: {a.turns} turns of ~2 KB, one after another, default settings")
    fn = Function(binary, function_env(proxy, model, cost_table), LOGS / f"storage-cost-{layout}.log")
    sizes = {k: s for k, (s, _) in table.scan().items()}
    turns, mismatched = [], 0
    try:
        for turn in range(1, a.turns + 1):
            control(proxy, "DELETE", "/_log")
            status, body = fn.invoke(chat_event(session, f"{session}-{turn}", cost_message(turn)))
            if status != 200:
                raise RuntimeError(f"turn {turn}: {status} {body}")
            entries = control(proxy, "GET", "/_log")
            scanned = table.scan()
            after = {k: s for k, (s, _) in scanned.items()}
            figures, billed = bill_turn(entries, sizes, after, table,
                                        {k: it for k, (_, it) in scanned.items()})
            mismatched += sum(1 for k in set(billed) | set(after) if billed.get(k) != after.get(k))
            figures["turn"] = turn
            figures["session_item_bytes"] = after.get(session_key, 0)
            figures["items_in_table"] = len(after)
            turns.append(figures)
            sizes = after
            if turn % 50 == 0:
                log(f"  turn {turn}/{a.turns}")
    finally:
        fn.close()
        servers.stop(proxy)
        servers.stop(model)
    n = len(turns)
    all_ops = sorted({op for t in turns for op in t["calls"]})
    mean_calls = {op: round(sum(t["calls"].get(op, 0) for t in turns) / n, 3) for op in all_ops}
    return {
        "turns": n, "message_bytes": len(cost_message(1)),
        "at_turn": {str(t["turn"]): t for t in turns if t["turn"] in REPORT_TURNS},
        "mean": {"rcu": round(sum(t["rcu"] for t in turns) / n, 2),
                 "wcu": round(sum(t["wcu"] for t in turns) / n, 2),
                 "bytes_written": round(sum(t["bytes_written"] for t in turns) / n),
                 "table_calls": round(sum(sum(t["calls"].values()) for t in turns) / n, 3),
                 "table_calls_by_op": mean_calls},
        "max": {"rcu": max(t["rcu"] for t in turns), "wcu": max(t["wcu"] for t in turns),
                "session_item_bytes": max(t["session_item_bytes"] for t in turns)},
        "items_in_table_at_end": turns[-1]["items_in_table"],
        "updates_sized_approximately": sum(t["updates_sized_approximately"] for t in turns),
        "indexed_item_writes_not_in_wcu": sum(t["indexed_item_writes"] for t in turns),
        "size_mismatches": mismatched,
        "per_turn": [{k: t[k] for k in ("turn", "rcu", "wcu", "bytes_written", "session_item_bytes")}
                     | {"calls": sum(t["calls"].values())} for t in turns],
    }


# ---- main -------------------------------------------------------------------------------------

def commit():
    """The tree's commit, `+dirty` when the function's sources differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (head + ("+dirty" if dirty else "")) or None


def verdict(ok):
    return "MET" if ok else "MISSED"


def print_table(r):
    b = r["burst"]
    print(f"\nBusy group: {b['turns']} turns on one session, {b['processes']} processes x "
          f"{b['workers']} workers, model {b['model_seconds']:g} s (start skew {b['start_skew_ms']:g} ms)")
    lat = b["latency_s"] or {}
    rows = [
        ("answered (200)", f"{b['answered']}/{b['turns']}"),
        ("503s", ", ".join(f"{n} {c}" for c, n in b["errors_503"].items()) or "0"),
        ("other statuses", ", ".join(f"{n} x {s}" for s, n in b["other_statuses"].items()) or "none"),
        ("wall, start to last answer", f"{b['wall_s_to_last_answer']} s"),
        ("latency p50 / max (all turns)", f"{lat.get('p50')} / {lat.get('max')} s"),
        ("table calls", f"{b['table_calls']} ({b['table_calls_per_turn']:g} a turn)"),
        ("  by op, a turn", ", ".join(f"{op} {n:g}" for op, n in sorted(b["table_calls_per_turn_by_op"].items()))),
        ("  not 200", ", ".join(f"{op} {n} x {st}" for op, per in sorted(b["table_call_statuses"].items())
                                for st, n in sorted(per.items()) if st != "200") or "none"),
        ("runs stored", f"{b['stored_runs']} ({b['stored_unique_run_ids']} unique, "
                        f"{b['stored_duplicate_run_ids']} duplicate ids, "
                        f"{b['stored_duplicate_inputs']} duplicate messages)"),
        ("answered turns stored once", f"{b['answered_stored_once']}/{b['answered']} "
                                       f"({b['answered_not_stored']} missing, "
                                       f"{b['stored_not_answered']} stored but not answered)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    print("  goals:")
    for goal, ok in b["goals"].items():
        print(f"    {verdict(ok):<7} {goal}")

    c = r["cost"]
    print(f"\nCost per turn: {c['turns']} turns of ~2 KB (message {c['message_bytes']} bytes, echoed), "
          f"default settings; units from item sizes")
    head = ["", "RCU", "WCU", "bytes written", "table calls", "session item"]
    lines = []
    for t in REPORT_TURNS:
        x = c["at_turn"].get(str(t))
        if x is None:
            lines.append([f"turn {t}", "n/a", "n/a", "n/a", "n/a", "n/a"])
            continue
        calls = ", ".join(f"{op} {n}" for op, n in sorted(x["calls"].items()))
        lines.append([f"turn {t}", f"{x['rcu']:g}", f"{x['wcu']:g}", str(x["bytes_written"]),
                      f"{sum(x['calls'].values())} ({calls})", f"{x['session_item_bytes']} B"])
    m = c["mean"]
    calls = ", ".join(f"{op} {n:g}" for op, n in sorted(m["table_calls_by_op"].items()))
    lines.append([f"mean of {c['turns']}", f"{m['rcu']:g}", f"{m['wcu']:g}", str(m["bytes_written"]),
                  f"{m['table_calls']:g} ({calls})", f"max {c['max']['session_item_bytes']} B"])
    widths = [max(len(str(row[i])) for row in [head] + lines) for i in range(len(head))]
    for row in [head] + lines:
        print("  " + "  ".join(str(v).ljust(w) if i in (0, 4) else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))))
    print(f"  items in the table at the end: {c['items_in_table_at_end']}; size checks that "
          f"disagreed with the table: {c['size_mismatches']}; updates sized approximately: "
          f"{c['updates_sized_approximately']}; writes of indexed items (their index writes "
          f"not in WCU): {c['indexed_item_writes_not_in_wcu']}")
    print(f"  server ConsumedCapacity: {r['consumed_capacity_probe']['note']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 50-turn cost conversation")
    p.add_argument("--turns", type=int, default=200, help="turns of the cost conversation")
    p.add_argument("--burst", type=int, default=64, help="turns of the busy group, all at once")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--workers", type=int, default=32, help="AWS_LAMBDA_MAX_CONCURRENCY a process")
    p.add_argument("--model-seconds", type=float, default=1.0, help="the model's time to answer")
    p.add_argument("--no-build", action="store_true", help="use the release binary already built")
    p.add_argument("--binary", help="the function binary to run (implies --no-build)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for the function (e.g. QUOTA_TURNS_PER_MINUTE=1000); repeatable")
    p.add_argument("--out", default=str(HERE / "storage.json"))
    a = p.parse_args()
    for setting in a.env:
        name, _, value = setting.partition("=")
        EXTRA_ENV[name] = value
    if a.quick:
        a.turns = 50
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops what we started
    binary = Path(a.binary).resolve() if a.binary else BINARY
    if not a.binary and not a.no_build:
        bench.timed_run(["cargo", "build", "--release", "--bin", "session-chat"], cwd=ROOT,
                        env=bench.cargo_env())
    if not binary.exists():
        sys.exit(f"{binary} is missing: run without --no-build")
    if not os.access(bench.TOOLS_PY, os.X_OK):
        sys.exit(f"{bench.TOOLS_PY} is missing: run `make setup`")
    LOGS.mkdir(parents=True, exist_ok=True)
    for f in LOGS.glob("storage-*.log"):
        f.unlink()

    r = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "binary": str(binary),
         "commit": commit(),
         "config": {"burst_turns": a.burst, "processes": a.processes, "workers": a.workers,
                    "model_seconds": a.model_seconds, "cost_turns": a.turns, "env": EXTRA_ENV,
                    "dynamodb": "tools/dynamodb_local.py (moto, one request at a time) "
                                "through tools/fault_proxy.py",
                    "units": "from item sizes (see bench/storage.py's docstring), not from the "
                             "server's ConsumedCapacity (see consumed_capacity_probe)"}}
    servers = bench.Servers()
    run_id = time.strftime("%H%M%S")
    try:
        # One layout since 2026-12-07 (the item layout's figures of 2026-12-02 stay in the
        # storage.json of that day's commits).
        layouts = ["log"]
        names = [name for layout in layouts for name in tables(layout)] + [PROBE_TABLE]
        db = servers.start(bench.TOOLS_PY, ROOT / "tools" / "dynamodb_local.py",
                           *[arg for name in names for arg in ("--table", name)])
        r["consumed_capacity_probe"] = probe_consumed_capacity(dynamodb(db))
        r["layouts"] = {}
        for layout in layouts:
            log(f"layout {layout}")
            burst = run_burst(a, binary, servers, db, run_id, layout)
            burst["goals"] = burst_goals(burst)
            cost = run_cost(a, binary, servers, db, run_id, layout)
            r["layouts"][layout] = {"burst": burst, "cost": cost}
    finally:
        servers.stop()
    Path(a.out).write_text(json.dumps(r, indent=1) + "\n")
    for layout, results in r["layouts"].items():
        print(f"\n== layout {layout}")
        print_table({**results, "consumed_capacity_probe": r["consumed_capacity_probe"]})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
