#!/usr/bin/env python3
"""Benchmark: many conversations per execution environment (Lambda Managed Instances).

    bench/managed.py [--turns 64] [--workers 32] [--model-seconds 1]

With the release build of session-chat (target/release/session-chat; `make bench` builds it),
the local DynamoDB-compatible server and the scripted model answering after --model-seconds:
- one process with --workers workers (AWS_LAMBDA_MAX_CONCURRENCY) answering --turns turns on as
  many sessions, all at once: wall time and peak RSS;
- the same turns as --turns on-demand processes of one worker each, all at once: the memory they
  hold together;
- one process answering one turn: the single-request peak RSS;
then the cost per 1,000 turns on each compute type for template.yaml's configuration, from the
list prices below. Writes bench/managed.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (Servers, function_env, TOOLS_PY)

BINARY = bench.TARGET / "release" / "session-chat"

# us-east-1 list prices as published (Lambda since 2022, Managed Instances since their launch
# in 2025, EC2 m7g); not re-checked from this machine, which has no internet.
PRICES = {
    "date": "2025-12 (list prices, us-east-1)",
    "lambda_arm_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "managed_fee_of_ec2": 0.15,
    "m7g_large_hour": 0.0816,  # 2 vCPU, 8 GiB
}


def drive(env, events, workers):
    proc = subprocess.run(
        [bench.TOOLS_PY, ROOT / "tools" / "concurrent_runtime.py", "--binary", BINARY,
         "--workers", str(workers)],
        input=json.dumps(events), capture_output=True, text=True, env=env, check=True)
    report = json.loads(proc.stdout)
    bad = [i for i in report["invocations"] if i["status"] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} turns failed: {bad[0]}")
    return report


def event(session, message):
    e = json.loads((ROOT / "events" / "http-api" / "1-collin-hello.json").read_text())
    e["body"] = json.dumps({"session_id": session, "message": message})
    return e


def costs(turn_seconds, on_demand_mb, workers, measured_rss_mb):
    """Cost per 1,000 turns of `turn_seconds` each (mostly the model's answer)."""
    p = PRICES
    on_demand = 1000 * (on_demand_mb / 1024 * turn_seconds * p["lambda_arm_gb_second"]
                        + p["lambda_request"])
    # Managed: an m7g.large holds two 2 GB / 1 vCPU environments (MemoryGiBPerVCpu 2) of
    # `workers` turns each; busy all the time, it answers 2 * workers turns every turn_seconds.
    hour = p["m7g_large_hour"] * (1 + p["managed_fee_of_ec2"])
    turns_an_hour = 2 * workers * 3600 / turn_seconds
    managed_full = 1000 * (hour / turns_an_hour + p["lambda_request"])
    # Break-even: the share of that capacity a steady load must use for managed to be cheaper.
    break_even = (managed_full - 1000 * p["lambda_request"]) / (on_demand - 1000 * p["lambda_request"])
    return {"turn_seconds": turn_seconds, "on_demand_per_1000": round(on_demand, 5),
            "managed_per_1000_at_full_use": round(managed_full, 5),
            "managed_break_even_utilisation": round(break_even, 3),
            "memory_per_environment_mb": 2048, "measured_rss_mb_per_environment": measured_rss_mb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=64)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--model-seconds", type=float, default=1.0)
    ap.add_argument("--out", default=str(HERE / "managed.json"))
    a = ap.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: cargo build --release (make bench builds it)")

    servers = bench.Servers()
    try:
        db = servers.start(bench.TOOLS_PY, ROOT / "tools" / "dynamodb_local.py", "--table", bench.TABLE)
        model = servers.start(sys.executable, ROOT / "tools" / "scripted_model.py",
                              "--answer-delay", a.model_seconds)
        env = dict(os.environ)
        env.update(bench.function_env(db, model, {}))
        run = time.strftime("%H%M%S")

        single = drive(env, [event(f"single-{run}", "I'm Ada")], 1)
        shared = drive(env, [event(f"m-{run}-{i}", f"I'm Person{i}") for i in range(a.turns)],
                       a.workers)
        # The same turns as that many on-demand environments, one turn each, at once.
        with ThreadPoolExecutor(a.turns) as pool:
            singles = list(pool.map(
                lambda i: drive(env, [event(f"o-{run}-{i}", f"I'm Person{i}")], 1),
                range(a.turns)))
    finally:
        servers.stop()

    r = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"turns": a.turns, "workers": a.workers, "model_seconds": a.model_seconds},
        "single_request": {"peak_rss_kb": single["peak_rss_kb"]},
        "one_process": {"wall_s": round(shared["wall_s"], 3), "peak_rss_kb": shared["peak_rss_kb"]},
        "on_demand_processes": {
            "processes": a.turns,
            "wall_s": round(max(s["wall_s"] for s in singles), 3),
            "total_rss_kb": sum(s["peak_rss_kb"] for s in singles),
        },
        "prices": PRICES,
        "cost": {str(t): costs(t, 256, a.workers, round(shared["peak_rss_kb"] / 1024, 1))
                 for t in (2.0, 5.0)},
    }
    Path(a.out).write_text(json.dumps(r, indent=2) + "\n")
    ideal = -(-a.turns // a.workers) * a.model_seconds
    print(f"one process, {a.workers} workers, {a.turns} turns with a {a.model_seconds:g} s model: "
          f"{r['one_process']['wall_s']:.2f} s wall ({r['one_process']['wall_s'] / ideal:.2f}x the "
          f"{ideal:g} s floor), peak RSS {r['one_process']['peak_rss_kb'] / 1024:.1f} MB "
          f"({r['one_process']['peak_rss_kb'] / r['single_request']['peak_rss_kb']:.2f}x one request's "
          f"{r['single_request']['peak_rss_kb'] / 1024:.1f} MB)")
    print(f"{a.turns} on-demand processes: {r['on_demand_processes']['wall_s']:.2f} s wall, "
          f"{r['on_demand_processes']['total_rss_kb'] / 1024:.1f} MB held in all")
    for t, c in r["cost"].items():
        print(f"cost per 1,000 turns of {t} s: on demand (256 MB) ${c['on_demand_per_1000']:.5f}; "
              f"managed (m7g.large, 2 x {a.workers} at once) ${c['managed_per_1000_at_full_use']:.5f} "
              f"at full use, cheaper above {c['managed_break_even_utilisation']:.0%} use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
