#!/usr/bin/env python3
"""`make bench-real`: the memory on a real engine. A 100-turn conversation on the local LLM of
`make llm` (SmolLM2-135M-Instruct on llama.cpp's llama-server, tools/local_llm.py), four ways:

  defaults          session-chat's release build (as bench/context.py runs it: the local Runtime
                    API, Lambda's streaming mode, moto), its default settings but the budget below
  SUMMARIZE=false   the same with SUMMARIZE=false
  defaults+fold-engine  the defaults, with the running-summary requests on a second engine
                    process (tools/local_llm.py --fold-engine), as a provider serves concurrent
                    requests on separate capacity
  rebuilt           no session-chat: the prompt rebuilt every turn as a sliding window of the last
                    WINDOW_RUNS runs (LangChain's ConversationBufferWindowMemory design), sent by
                    this script to the same engine, streamed

Each way gets a fresh engine (greedy sampling, replies up to N_PREDICT tokens, 2 slots of
CTX / 2 tokens each) behind the recording proxy, so no way inherits another's cache. The first
message is "Hello my name is Collin.", then messages of ~MESSAGE_CHARS characters (bench/context.py's
filler sentences), and the last "What is my name?".

Figures per way (from the proxy's record of every request and of the engine's report, and the
client's clock):
  calls/turn        chat requests the engine received / turns
  reused            the engine's own count of prompt tokens it reused from its KV cache
                    (llama.cpp's timings.cache_n, which it also reports as
                    usage.prompt_tokens_details.cached_tokens) over the prompt tokens
                    (cache_n + prompt_n), summed over the reply calls from the turn at which the
                    window is full (session-chat's first prompt that leaves out an earlier run; for
                    the rebuilt way, the first turn past WINDOW_RUNS runs) to the end
  first token       the client's time from sending the turn (the event to the function, or the
                    request to the engine) to the first piece of the reply, p50/p95: turns that
                    step (a fold request reached the engine during the turn; without summaries,
                    the turns whose prompt's leading messages changed), the turn after each step,
                    the other turns; turn 1 (a cold engine) left out
  recall            whether the last turn's reply names Collin

Writes bench/real.json (and each way's turns and recorded requests to
target/bench/logs/real-*-raw.json) and prints a table. Stops everything it starts.

    real.py [--quick] [--turns N] [--no-build] [--ways defaults,SUMMARIZE=false,rebuilt]
            [--engine-arg=ARG ...] [--out bench/real.json] [--add]
"""
import argparse
import json
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
import bench  # noqa: E402  (Servers, function_env, cargo_env, timed_run, event_times, TARGET)
import context  # noqa: E402  (filler, ENGLISH, sse_event, done_reply, by_turn, fmt)

BINARY = bench.TARGET / "release" / "session-chat"
LOGS = bench.TARGET / "logs"
BUDGET = 1500          # HISTORY_TOKEN_BUDGET for both session-chat ways
MESSAGE_CHARS = 200    # a message of ~50 tokens; with a reply of up to N_PREDICT, a run of ~100
N_PREDICT = 40         # the engine's reply limit (session-chat sends no max_tokens)
CTX, SLOTS = 8192, 2   # llama-server -c, -np: 4,096 tokens a slot, above the 1.5 x budget bound
THREADS = 1            # llama-server -t (on this shared 2-core machine -t 2 ran ~15x slower)
WINDOW_RUNS = 10       # the rebuilt way's window: about the mean of session-chat's (B/2 .. B)
MODEL_ID = "SmolLM2-135M-Instruct"


def log(text):
    print(text, file=sys.stderr, flush=True)


def messages_for(turns: int) -> list:
    middle = [context.filler(context.ENGLISH, t, MESSAGE_CHARS, " ") for t in range(2, turns)]
    return ["Hello my name is Collin."] + middle + ["What is my name?"]


ENGINE_ARGS = []      # more llama-server arguments (--engine-arg)


def start_engine(servers, logfile, fold_engine=False):
    return servers.start(sys.executable, ROOT / "tools" / "local_llm.py", "--ctx", CTX,
                         "--parallel", SLOTS, "--threads", THREADS, "--n-predict", N_PREDICT,
                         "--server-log", logfile, *[f"--engine-arg={a}" for a in ENGINE_ARGS],
                         *(["--fold-engine"] if fold_engine else []))


def recorded(port) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_requests") as r:
        return json.load(r)


# ---- the ways ---------------------------------------------------------------------------------

def through_session_chat(db, engine, messages, extra_env, session, logfile) -> list:
    """Streamed turns, one after another, through one function process (bench/context.py's)."""
    env = bench.function_env(db, engine, dict(extra_env, MODEL_ID=MODEL_ID,
                                              HISTORY_TOKEN_BUDGET=str(BUDGET),
                                              MODEL_TIMEOUT_SECS="120"))
    env.pop("OPENAI_API_KEY")
    return context.stream_turns(env, messages, session, logfile, timeout=300, every=10)


def rebuilt(engine, messages) -> list:
    """The prompt rebuilt every turn: the last WINDOW_RUNS runs and the new message."""
    runs, turns = [], []
    for turn, text in enumerate(messages, 1):
        prompt = []
        for user, assistant in runs[-WINDOW_RUNS:]:
            prompt += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        prompt.append({"role": "user", "content": text})
        body = json.dumps({"model": MODEL_ID, "messages": prompt, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{engine}/v1/chat/completions",
                                         data=body, headers={"content-type": "application/json"})
        sent, first, pieces = time.monotonic(), None, []
        with urllib.request.urlopen(request, timeout=300) as r:
            for line in r:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                for choice in json.loads(line[6:]).get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        first = first or time.monotonic()
                        pieces.append(piece)
        reply = "".join(pieces)
        turns.append({"sent": sent, "first": first or time.monotonic(), "done": time.monotonic(),
                      "reply": reply})
        runs.append((text, reply))
        if turn % 10 == 0:
            log(f"  turn {turn}/{len(messages)}")
    return turns


# ---- figures ----------------------------------------------------------------------------------

def said(body) -> list:
    return [(m.get("role"), m.get("content")) for m in body["messages"]]


def pct(samples, q):
    return round(bench.percentile(samples, q), 1) if samples else None


def latency(samples):
    if not samples:
        return None
    return {"p50": round(statistics.median(samples), 1), "p95": pct(samples, 95), "n": len(samples)}


def figures(turns, requests) -> dict:
    n = len(turns)
    per_turn = context.by_turn(turns, requests)
    replies = []
    for i, rs in enumerate(per_turn):
        mine = [r for r in rs if not r.get("summary")]
        if len(mine) != 1:
            raise RuntimeError(f"turn {i + 1}: {len(mine)} reply requests")
        replies.append(mine[0])
    folds = [i for i, rs in enumerate(per_turn) if any(r.get("summary") for r in rs)]
    # A prompt keeps its prefix when it is the previous one plus the previous reply and the new
    # message; else its leading messages changed: the window stepped.
    changed = [i for i in range(1, n)
               if said(replies[i]["body"])[:len(said(replies[i - 1]["body"]))]
               != said(replies[i - 1]["body"])]
    # The window is full from the first prompt that leaves out an earlier run.
    full_from = next((i for i, r in enumerate(replies)
                      if len([m for m in said(r["body"]) if m[0] == "user"]) < i + 1), None)
    # With summaries, the turn that steps is answered with the old window while the fold runs
    # beside it, and the next prompt is the changed one; without, the step changes the prompt
    # of the turn itself.
    stepping = folds if folds else changed
    after = sorted({i + 1 for i in stepping if i + 1 < n})
    first_ms = [(t["first"] - t["sent"]) * 1000 for t in turns]
    others = [first_ms[i] for i in range(1, n) if i not in stepping and i not in after]
    reused = prompt = 0
    cached_reported = 0
    for r in replies[full_from or n:]:
        t = r.get("timings") or {}
        reused += t.get("cache_n", 0)
        prompt += t.get("cache_n", 0) + t.get("prompt_n", 0)
        cached_reported += ((r.get("usage") or {}).get("prompt_tokens_details") or {}).get(
            "cached_tokens", 0)
    all_reused = sum((r.get("timings") or {}).get("cache_n", 0) for r in replies)
    all_prompt = sum((r.get("timings") or {}).get("cache_n", 0)
                     + (r.get("timings") or {}).get("prompt_n", 0) for r in replies)
    p_step = latency([first_ms[i] for i in stepping if i > 0])
    p_other = latency(others)
    return {
        "turns": n,
        "model_calls": len(requests),
        "fold_calls": len(requests) - n,
        "model_calls_per_turn": round(len(requests) / n, 3),
        "window_full_from_turn": full_from + 1 if full_from is not None else None,
        "mean_reply_prompt_tokens": round(statistics.mean(
            (r.get("usage") or {}).get("prompt_tokens", 0) for r in replies), 1),
        "reused_share_after_full": round(reused / prompt, 4) if prompt else None,
        "reused_tokens_after_full": reused,
        "prompt_tokens_after_full": prompt,
        "cached_tokens_reported_after_full": cached_reported,
        "reused_share_all_turns": round(all_reused / all_prompt, 4) if all_prompt else None,
        "stepping_turns": [i + 1 for i in stepping],
        "first_token_ms": {
            "all": latency(first_ms[1:]),
            "stepping": p_step,
            "after_step": latency([first_ms[i] for i in after]),
            "other": p_other,
        },
        "stepping_over_other_p50": (round(p_step["p50"] / p_other["p50"], 3)
                                    if p_step and p_other else None),
        "last_reply": turns[-1]["reply"],
        "recalls_name": "collin" in turns[-1]["reply"].lower(),
        "first_replies": [t["reply"] for t in turns[:2]],
    }


# ---- main -------------------------------------------------------------------------------------

def run_way(servers, db, way, messages, run_id):
    log(f"{way}: {len(messages)} streamed turns")
    engine = start_engine(servers, LOGS / f"real-{way.replace('=', '-')}-engine.log",
                          fold_engine=way.endswith("+fold-engine"))
    started = time.monotonic()
    try:
        if way == "rebuilt":
            turns = rebuilt(engine, messages)
        else:
            extra = {"SUMMARIZE": "false"} if way.startswith("SUMMARIZE=false") else {}
            turns = through_session_chat(db, engine, messages, extra, f"real-{run_id}-{len(way)}",
                                         LOGS / f"real-{way.replace('=', '-')}.log")
        requests = recorded(engine)
    finally:
        servers.stop(engine)
    raw = LOGS / f"real-{way.replace('=', '-')}-raw.json"
    raw.write_text(json.dumps({"turns": turns, "requests": requests}))
    out = figures(turns, requests)
    out["wall_s"] = round(time.monotonic() - started, 1)
    return out


def lat(x):
    return "n/a" if not x else f"{x['p50']:.0f} / {x['p95']:.0f} (n={x['n']})"


def print_table(r):
    ways = r["ways"]
    rows = [
        ("model calls per turn", lambda x: context.fmt(x["model_calls_per_turn"])),
        ("mean prompt tokens", lambda x: context.fmt(x["mean_reply_prompt_tokens"])),
        ("window full from turn", lambda x: context.fmt(x["window_full_from_turn"])),
        ("engine-reused prompt tokens after", lambda x: context.fmt(x["reused_share_after_full"], True)),
        ("first token ms p50/p95, all", lambda x: lat(x["first_token_ms"]["all"])),
        ("  turns that step", lambda x: lat(x["first_token_ms"]["stepping"])),
        ("  turns after a step", lambda x: lat(x["first_token_ms"]["after_step"])),
        ("  other turns", lambda x: lat(x["first_token_ms"]["other"])),
        ("last turn names Collin", lambda x: context.fmt(x["recalls_name"])),
        ("wall time (s)", lambda x: context.fmt(x["wall_s"])),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\n{r['config']['turns']} turns on {r['config']['model']}:")
    print(" " * width + "".join(f"  {c:>24}" for c in ways))
    for label, get in rows:
        print(label.ljust(width) + "".join(f"  {get(ways[c]):>24}" for c in ways))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 40-turn conversation")
    p.add_argument("--turns", type=int, default=100)
    p.add_argument("--ways", default="defaults,SUMMARIZE=false,rebuilt,defaults+fold-engine")
    p.add_argument("--add", action="store_true", help="add the ways to those already in --out")
    p.add_argument("--no-build", action="store_true", help="use the release binary already built")
    p.add_argument("--engine-arg", action="append", default=[],
                   help="one more llama-server argument for every way (repeat it)")
    p.add_argument("--out", default=str(HERE / "real.json"))
    a = p.parse_args()
    ENGINE_ARGS.extend(a.engine_arg)
    if a.quick:
        a.turns = 40
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not a.no_build:
        bench.timed_run(["cargo", "build", "--release", "--bin", "session-chat"], cwd=ROOT,
                        env=bench.cargo_env())
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run without --no-build")
    LOGS.mkdir(parents=True, exist_ok=True)
    for way in a.ways.split(","):
        for f in LOGS.glob(f"real-{way.replace('=', '-')}*"):
            f.unlink()
    paths = subprocess.run(["bash", "-c", ". tools/llm/paths.sh && echo $LLM_SERVER_PACKAGE "
                            "$LLM_WEIGHTS_PACKAGE $LLM_MODEL_FILE"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    messages = messages_for(a.turns)
    r = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "config": {"turns": a.turns, "model": f"{paths[2]} ({paths[1]})",
                    "engine": f"llama-server from {paths[0]}, -c {CTX} -np {SLOTS} -t {THREADS}, "
                              f"temperature 0, n_predict {N_PREDICT}"
                              + "".join(f" {x}" for x in ENGINE_ARGS),
                    "history_token_budget": BUDGET, "message_chars": MESSAGE_CHARS,
                    "rebuilt_window_runs": WINDOW_RUNS,
                    "reused": "timings.cache_n / (cache_n + prompt_n) of the reply calls, summed "
                              "from the first turn whose prompt leaves out an earlier run",
                    "first_token": "client clock, send to first reply piece; turn 1 left out"},
         "ways": {}}
    if a.add and Path(a.out).exists():
        r["ways"] = json.loads(Path(a.out).read_text())["ways"]
    servers = bench.Servers()
    run_id = time.strftime("%H%M%S")
    try:
        db = servers.start(bench.TOOLS_PY, ROOT / "tools" / "dynamodb_local.py", "--table", bench.TABLE)
        for way in a.ways.split(","):
            r["ways"][way] = run_way(servers, db, way, messages, run_id)
            Path(a.out).write_text(json.dumps(r, indent=1) + "\n")
    finally:
        servers.stop()
    Path(a.out).write_text(json.dumps(r, indent=1) + "\n")
    print_table(r)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
