#!/usr/bin/env python3
"""`make bench-context`: what a long conversation costs in model tokens, and what it remembers.

Builds session-chat's release binary as bench.py does (CARGO_TARGET_DIR=target/bench), starts the
local DynamoDB-compatible server (moto) and, for each conversation, a fresh scripted model that
counts tokens with its tokenizer (tools/tokencount, o200k_base; `make tokencount`) and simulates
OpenAI's prefix cache. The function runs under the bench's local Lambda Runtime API in Lambda's
streaming mode; every turn is a streamed request (Accept: text/event-stream), one after another.

Conversations:
  english    200 turns (80 with --quick): "Hello my name is Collin.", then messages of about
             1,200 characters (the scripted model echoes each, so a turn stores ~2,450), and last
             "What is my name?"; once with the function's default settings, once with
             SUMMARIZE=false. HISTORY_TOKEN_BUDGET is left at the function's default (8000).
  chinese    60 turns of ~300 CJK characters with HISTORY_TOKEN_BUDGET=2000 (default settings
             otherwise).

The scripted model's first word comes after 0.1 s and a word every 1 ms; a whole (non-streamed)
answer, which is how running summaries are asked for, after 0.3 s, so a fold on a reply's path
shows in its first-token latency.

Figures, per English run (from the requests the scripted model received, their reported usage,
and the client's clock):
  calls/turn        chat requests the model received / turns
  prompt/turn       mean usage.prompt_tokens of the reply calls (not the summary calls), a turn
  cacheable         from the turn at which the whole earlier conversation exceeds the budget
                    (8000 tokens estimated as characters / 4, the function's old estimate, over
                    the user and assistant messages before the turn's own: the window is full),
                    for each reply prompt: the tokens of its leading messages identical (role and
                    content) to the previous reply prompt's leading messages, over its tokens
                    (tokens as the scripted model counts them: content + 4 a message); the mean
  cached            usage.prompt_tokens_details.cached_tokens over usage.prompt_tokens, summed over
                    every model call (the simulated provider cache; see tools/scripted_model.py)
  recall            whether the last turn's reply names Collin
  first token       the client's time from handing the event to the function to the first `delta`
                    event, p50/p99, on stepping turns (a summary request reached the model during
                    the turn) and on the other turns; turn 1 (the process's first invoke) left out
  input $/1k turns  model input cost of every call (replies and summaries) per 1,000 turns, at
                    gpt-4.1-mini list prices (PRICES below), without caching and with the cached
                    tokens reported billed at the cached price
Chinese run: for each reply prompt once the window is full (the real token count of the earlier
conversation exceeds 2000), the history tokens (user and assistant messages before the new one,
content + 4 a message, o200k_base): mean and max, and as ratios to the budget.

Writes bench/context.json and prints a table. Stops everything it starts.

    context.py [--quick] [--turns N] [--no-build] [--out bench/context.json]
"""
import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tools"))
import bench  # noqa: E402  (Servers, function_env, cargo_env, timed_run, event_times, TARGET)
import scripted_model  # noqa: E402  (Tokenizer, content_text)
from runtime_api import RuntimeApi  # noqa: E402

BINARY = bench.TARGET / "release" / "session-chat"
LOGS = bench.TARGET / "logs"
DEFAULT_BUDGET = 8000  # the function's HISTORY_TOKEN_BUDGET default
CJK_BUDGET = 2000
ENGLISH_CHARS, CJK_CHARS = 600, 300  # with the scripted model's echo, a turn of ~1,200 and ~600 characters
FIRST_TOKEN_DELAY, WORD_DELAY, ANSWER_DELAY = 0.1, 0.001, 0.3

PRICES = {
    "model": "gpt-4.1-mini",
    "input_per_million": 0.40,
    "cached_input_per_million": 0.10,
    "date": "2025-04 (OpenAI's list prices at gpt-4.1-mini's launch; not re-checked from here)",
}

# Sentences for the filler. None introduces a name or asks one (the scripted model would read
# "I'm X", "I am X", "call me X", "my name is X", "who ... here" as such).
ENGLISH = [
    "The tomatoes along the south fence need staking before the wind picks up next week.",
    "We moved the basil between them, since it seemed to like the afternoon shade there.",
    "Beans are climbing the trellis by the shed faster than anyone expected this spring.",
    "The squash went where the old compost heap was, and the soil there is very rich.",
    "A neighbour suggested marigolds at the corners to keep some of the pests away.",
    "The rain barrel overflowed twice last month, so the gutter needs a second outlet.",
    "Our train leaves at seven, which means breakfast has to be ready by half past six.",
    "The museum on the hill opens late on Thursdays, and the tickets are cheaper then.",
    "For dinner there will be lentil soup, a loaf of rye bread and a simple green salad.",
    "The recipe calls for two onions, three carrots, a bay leaf and a pinch of thyme.",
    "Please remind me to call the plumber about the slow drain in the upstairs bathroom.",
    "The library returned the reservation notice: the book on bridges is finally in.",
    "On Saturday the market closes at noon, so the fruit has to be bought early.",
    "The bicycle chain keeps slipping on the steepest hill, probably a worn cassette.",
    "A quarterly report is due on Friday, with the tables from the spring survey.",
    "The cat sleeps on the warm windowsill every afternoon from two until about five.",
    "Next month the school holds its science fair, and the volcano model is half built.",
    "The old oak by the gate dropped a large branch during the storm on Tuesday night.",
]
CHINESE = [
    "今天早上天气很好，我们去公园散步，看到很多人在湖边打太极拳。",
    "这个周末我打算整理书房，把旧杂志和不用的文件都清理出去。",
    "厨房里的水龙头有点漏水，需要找师傅来换一个新的密封圈。",
    "昨天晚上我们做了红烧肉和炒青菜，还煮了一锅香喷喷的米饭。",
    "下个月学校要举办运动会，孩子们每天放学后都在操场上练习跑步。",
    "图书馆新到了一批关于历史和地理的书，借阅的人特别多。",
    "火车七点钟出发，所以我们六点半之前必须吃完早饭赶到车站。",
    "花园里的西红柿已经开始变红了，黄瓜也长得又直又长。",
    "这份季度报告需要在星期五之前完成，里面要包括春季调查的表格。",
    "山上的博物馆星期四晚上开放得比较晚，而且门票也更便宜。",
    "邻居建议我们在院子四个角种一些万寿菊，可以赶走一些害虫。",
    "自行车的链条在最陡的坡上总是打滑，可能是飞轮已经磨损了。",
    "这只猫每天下午都躺在暖和的窗台上睡觉，一直睡到五点左右。",
    "暴风雨过后，门口那棵老橡树掉下了一根很粗的树枝。",
]


def filler(sentences, turn: int, chars: int, sep: str) -> str:
    rng = random.Random(turn)
    text = f"Turn {turn}." if sep == " " else f"第{turn}轮。"
    while len(text) < chars:
        text += sep + rng.choice(sentences)
    return text


def english_messages(turns: int) -> list:
    middle = [filler(ENGLISH, t, ENGLISH_CHARS, " ") for t in range(2, turns)]
    return ["Hello my name is Collin."] + middle + ["What is my name?"]


def chinese_messages(turns: int) -> list:
    return [filler(CHINESE, t, CJK_CHARS, "") for t in range(1, turns + 1)]


def log(text):
    print(text, file=sys.stderr, flush=True)


# ---- one conversation -------------------------------------------------------------------------

EVENT = json.loads((ROOT / "events" / "http-api" / "1-collin-hello.json").read_text())


def sse_event(session: str, turn: int, text: str) -> dict:
    body = json.dumps({"session_id": session, "message": text})
    e = json.loads(json.dumps(EVENT))
    e["body"] = body
    e["headers"]["content-length"] = str(len(body))
    e["headers"]["accept"] = "text/event-stream"
    e["requestContext"]["requestId"] = f"{session}-{turn}"
    return e


def done_reply(chunks) -> str:
    """The reply text of the `done` event."""
    data = b"".join(c for _, c in chunks).decode(errors="replace")
    for block in data.split("\n\n"):
        lines = block.split("\n")
        if lines and lines[0] == "event: done":
            payload = "".join(line[len("data: "):] for line in lines[1:] if line.startswith("data: "))
            return json.loads(payload).get("reply", "")
    return ""


def converse(db_port, model_port, messages, extra_env, session, logfile) -> list:
    """Sends the messages as streamed turns to one function process; returns per turn the
    client's times (monotonic s) and the reply."""
    env = bench.function_env(db_port, model_port, extra_env)
    env.pop("HISTORY_TOKEN_BUDGET")  # the function's default, unless extra_env sets it
    env.update(extra_env)
    return stream_turns(env, messages, session, logfile)


def stream_turns(env, messages, session, logfile, timeout=120, every=20) -> list:
    """The messages as streamed turns, one after another, to one function process started with
    `env` under the bench's Runtime API; per turn the client's times (monotonic s) and the
    reply."""
    api = RuntimeApi()
    turns = []
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([str(BINARY)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env, INVOKE_MODE="RESPONSE_STREAM",
                                         AWS_LAMBDA_RUNTIME_API=api.address))
        try:
            api.wait_ready(proc)
            for turn, text in enumerate(messages, 1):
                inv = api.invoke(sse_event(session, turn, text), timeout=timeout)
                first, done = bench.event_times(inv.chunks)
                if (inv.prelude or {}).get("statusCode") != 200 or first is None or done is None:
                    raise bench.BadAnswer(f"turn {turn}: {inv.prelude} {inv.body[-300:]!r} "
                                          f"(log in {logfile})")
                turns.append({"sent": inv.handed_at, "first": first, "done": done,
                              "reply": done_reply(inv.chunks)})
                if turn % every == 0:
                    log(f"  turn {turn}/{len(messages)}")
        finally:
            proc.kill()
            proc.wait()
            api.close()
    return turns


def by_turn(turns, requests) -> list:
    """The model requests received during each turn (from its event to the next turn's)."""
    out = [[] for _ in turns]
    starts = [t["sent"] for t in turns]
    for r in requests:
        i = max((k for k, s in enumerate(starts) if s <= r["received_at"]), default=0)
        out[i].append(r)
    return out


# ---- figures ----------------------------------------------------------------------------------

class Counter:
    """Tokens as the scripted model counts them (o200k_base through tokencount)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def text(self, text: str) -> int:
        n = self.tokenizer.count(text)
        if n is None:
            raise RuntimeError("the tokenizer stopped answering")
        return n

    def message(self, m) -> int:
        return self.text(scripted_model.content_text(m.get("content"))) + 4


def identity(m):
    return (m.get("role"), json.dumps(m.get("content"), sort_keys=True))


def shared_lead(prompt, previous, count) -> int:
    """Tokens of the prompt's leading messages identical to the previous prompt's."""
    n = 0
    for a, b in zip(prompt, previous):
        if identity(a) != identity(b):
            break
        n += count.message(a)
    return n


def history(prompt) -> list:
    """The user and assistant messages before the new (last) one."""
    said = [m for m in prompt if m.get("role") in ("user", "assistant")]
    return said[:-1]


def percentiles(samples_ms):
    if not samples_ms:
        return None
    return {"p50": round(statistics.median(samples_ms), 1),
            "p99": round(bench.percentile(samples_ms, 99), 1), "n": len(samples_ms)}


def cost_per_1000(prompt_tokens, cached_tokens, turns):
    p = PRICES
    full = prompt_tokens * p["input_per_million"] / 1e6
    cached = ((prompt_tokens - cached_tokens) * p["input_per_million"]
              + cached_tokens * p["cached_input_per_million"]) / 1e6
    return round(full / turns * 1000, 4), round(cached / turns * 1000, 4)


def english_figures(messages, turns, requests, count) -> dict:
    per_turn = by_turn(turns, requests)
    n = len(turns)
    replies = [(i, r) for i, rs in enumerate(per_turn) for r in rs if not r.get("summary")]
    summaries = [r for r in requests if r.get("summary")]
    usage = [r.get("usage") or {} for r in requests]
    prompt_all = sum(u.get("prompt_tokens", 0) for u in usage)
    cached_all = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usage)

    # The window is full from the first turn whose earlier conversation exceeds the budget.
    estimated, full_from = 0, None
    for i, text in enumerate(messages):
        if estimated > DEFAULT_BUDGET:
            full_from = i
            break
        estimated += len(text) // 4 + len(turns[i]["reply"]) // 4
    # ... and observably from the first reply prompt that leaves out some of it.
    first_trimmed = next((i + 1 for i, r in replies
                          if len(history(r["body"]["messages"])) < 2 * i), None)
    shares, after_cached, after_prompt = [], 0, 0
    for (i, r), (_, prev) in zip(replies[1:], replies):
        if full_from is None or i < full_from:
            continue
        prompt, previous = r["body"]["messages"], prev["body"]["messages"]
        tokens = sum(count.message(m) for m in prompt)
        shares.append(shared_lead(prompt, previous, count) / tokens)
        u = r.get("usage") or {}
        after_prompt += u.get("prompt_tokens", 0)
        after_cached += (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)

    stepping = [i for i, rs in enumerate(per_turn) if any(r.get("summary") for r in rs)]
    first_ms = [(t["first"] - t["sent"]) * 1000 for t in turns]
    step_ms = [first_ms[i] for i in stepping if i > 0]
    other_ms = [first_ms[i] for i in range(1, n) if i not in set(stepping)]
    full, with_cache = cost_per_1000(prompt_all, cached_all, n)
    return {
        "turns": n,
        "model_calls": len(requests),
        "summary_calls": len(summaries),
        "model_calls_per_turn": round(len(requests) / n, 3),
        "mean_reply_prompt_tokens": round(sum((r.get("usage") or {}).get("prompt_tokens", 0)
                                              for _, r in replies) / n, 1),
        "window_full_from_turn": full_from + 1 if full_from is not None else None,
        "first_trimmed_prompt_turn": first_trimmed,
        "cacheable_share_after_full": round(statistics.mean(shares), 4) if shares else None,
        "cacheable_prompts_measured": len(shares),
        "cached_share_reported": round(cached_all / prompt_all, 4) if prompt_all else None,
        "cached_share_reported_after_full": (round(after_cached / after_prompt, 4)
                                             if after_prompt else None),
        "last_reply": turns[-1]["reply"],
        "recalls_name": "Collin" in turns[-1]["reply"],
        "stepping_turns": [i + 1 for i in stepping],
        "first_token_ms": {"stepping": percentiles(step_ms), "other": percentiles(other_ms)},
        "input_tokens_all_calls": prompt_all,
        "cached_tokens_all_calls": cached_all,
        "input_cost_per_1000_turns_usd": {"without_caching": full, "with_caching": with_cache},
    }


def chinese_figures(turns, requests, count) -> dict:
    per_turn = by_turn(turns, requests)
    rows = []
    whole = 0  # the real tokens of the whole earlier conversation
    for i, rs in enumerate(per_turn):
        replies = [r for r in rs if not r.get("summary")]
        if replies and whole > CJK_BUDGET:
            rows.append(sum(count.message(m) for m in history(replies[-1]["body"]["messages"])))
        if replies:
            new = [m for m in replies[-1]["body"]["messages"] if m.get("role") == "user"][-1]
            whole += count.message(new) + count.text(turns[i]["reply"]) + 4
    out = {"turns": len(turns), "history_token_budget": CJK_BUDGET, "prompts_measured": len(rows),
           "model_calls_per_turn": round(len(requests) / len(turns), 3)}
    if rows:
        out.update(mean_history_tokens=round(statistics.mean(rows), 1), max_history_tokens=max(rows),
                   mean_ratio=round(statistics.mean(rows) / CJK_BUDGET, 3),
                   max_ratio=round(max(rows) / CJK_BUDGET, 3))
    return out


# ---- main -------------------------------------------------------------------------------------

def run(servers, db, name, messages, extra_env, run_id):
    log(f"{name}: {len(messages)} streamed turns, env {extra_env or '(defaults)'}")
    model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py",
                          "--tokenizer", scripted_model.DEFAULT_TOKENIZER,
                          "--first-token-delay", FIRST_TOKEN_DELAY, "--word-delay", WORD_DELAY,
                          "--answer-delay", ANSWER_DELAY)
    try:
        turns = converse(db, model, messages, extra_env, f"ctx-{name}-{run_id}",
                         LOGS / f"context-{name}.log")
        requests = bench.model_requests(model)
    finally:
        servers.stop(model)
    return turns, requests


def fmt(v, pct=False):
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.1%}" if pct else f"{v:g}" if isinstance(v, float) else str(v)


def latency(p):
    return "n/a" if not p else f"{p['p50']:.0f}/{p['p99']:.0f} (n={p['n']})"


def print_table(r):
    runs = r["english"]
    cols = list(runs)
    print(f"\n{r['config']['turns']}-turn conversation, ~{ENGLISH_CHARS} characters a message "
          f"(HISTORY_TOKEN_BUDGET default), streamed:")
    rows = [
        ("model calls per turn", lambda x: fmt(x["model_calls_per_turn"])),
        ("mean prompt tokens (replies)", lambda x: fmt(x["mean_reply_prompt_tokens"])),
        ("window full from turn", lambda x: fmt(x["window_full_from_turn"])),
        ("cacheable share after that", lambda x: fmt(x["cacheable_share_after_full"], True)),
        ("cached tokens reported", lambda x: fmt(x["cached_share_reported"], True)),
        ("turn-N reply names Collin", lambda x: fmt(x["recalls_name"])),
        ("first token ms p50/p99, stepping", lambda x: latency(x["first_token_ms"]["stepping"])),
        ("first token ms p50/p99, other", lambda x: latency(x["first_token_ms"]["other"])),
        ("input $/1k turns, no caching", lambda x: "$%.3f" % x["input_cost_per_1000_turns_usd"]["without_caching"]),
        ("input $/1k turns, cached price", lambda x: "$%.3f" % x["input_cost_per_1000_turns_usd"]["with_caching"]),
    ]
    width = max(len(k) for k, _ in rows)
    print(" " * width + "".join(f"  {c:>24}" for c in cols))
    for label, get in rows:
        print(label.ljust(width) + "".join(f"  {get(runs[c]):>24}" for c in cols))
    p = r["prices"]
    print(f"prices: {p['model']} ${p['input_per_million']:.2f} / 1M input, "
          f"${p['cached_input_per_million']:.2f} / 1M cached input, {p['date']}")
    c = r["chinese"]
    if "mean_ratio" in c:
        print(f"\nChinese, {c['turns']} turns of ~{CJK_CHARS} characters, HISTORY_TOKEN_BUDGET="
              f"{c['history_token_budget']}: history tokens (o200k_base) once the window is full: "
              f"mean {c['mean_history_tokens']:.0f} ({c['mean_ratio']:.2f}x), max "
              f"{c['max_history_tokens']} ({c['max_ratio']:.2f}x), over {c['prompts_measured']} prompts")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="an 80-turn English conversation")
    p.add_argument("--turns", type=int, default=200, help="turns of the English conversation")
    p.add_argument("--cjk-turns", type=int, default=60)
    p.add_argument("--no-build", action="store_true", help="use the release binary already built")
    p.add_argument("--out", default=str(HERE / "context.json"))
    a = p.parse_args()
    if a.quick:
        a.turns = 80
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops what we started
    if not os.access(scripted_model.DEFAULT_TOKENIZER, os.X_OK):
        sys.exit(f"{scripted_model.DEFAULT_TOKENIZER} is missing: run `make tokencount`")
    if not a.no_build:
        bench.timed_run(["cargo", "build", "--release", "--bin", "session-chat"], cwd=ROOT,
                        env=bench.cargo_env())
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: run without --no-build")
    LOGS.mkdir(parents=True, exist_ok=True)
    for f in LOGS.glob("context-*.log"):
        f.unlink()

    count = Counter(scripted_model.Tokenizer(scripted_model.DEFAULT_TOKENIZER))
    english = english_messages(a.turns)
    r = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "config": {"turns": a.turns, "message_chars": ENGLISH_CHARS, "cjk_turns": a.cjk_turns,
                    "cjk_message_chars": CJK_CHARS, "cjk_history_token_budget": CJK_BUDGET,
                    "model_first_token_delay_s": FIRST_TOKEN_DELAY, "model_word_delay_s": WORD_DELAY,
                    "model_whole_answer_delay_s": ANSWER_DELAY,
                    "window_full": "from the first turn whose earlier user and assistant messages "
                                   f"exceed {DEFAULT_BUDGET} tokens estimated as characters / 4",
                    "tokenizer": "o200k_base (tools/tokencount)"},
         "prices": PRICES, "english": {}}
    servers = bench.Servers()
    run_id = time.strftime("%H%M%S")
    try:
        db = servers.start(bench.TOOLS_PY, ROOT / "tools" / "dynamodb_local.py", "--table", bench.TABLE)
        for name, extra in (("defaults", {}), ("SUMMARIZE=false", {"SUMMARIZE": "false"})):
            turns, requests = run(servers, db, name.replace("=", "-"), english, extra, run_id)
            r["english"][name] = english_figures(english, turns, requests, count)
        turns, requests = run(servers, db, "chinese", chinese_messages(a.cjk_turns),
                              {"HISTORY_TOKEN_BUDGET": str(CJK_BUDGET)}, run_id)
        r["chinese"] = chinese_figures(turns, requests, count)
    finally:
        servers.stop()
    Path(a.out).write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n")
    print_table(r)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
