"""Builds a griptape Agent whose conversation memory is griptape's own
AmazonDynamoDbConversationMemoryDriver, for whichever griptape is installed in the running
interpreter: 0.27.x (shape a), 0.30.x (shape b) or 1.x (shape c).

Used by play_walkthrough.py (any of the three venvs) and continue_session.py (the 1.x venv).
It never reaches the internet:
  * DynamoDB: a boto3 Session with dummy credentials in us-east-1, and the endpoint given through
    botocore's AWS_ENDPOINT_URL_DYNAMODB (the drivers take a Session, not an endpoint);
  * the model: griptape's OpenAiChatPromptDriver with base_url pointing at an OpenAI-compatible
    server (tools/scripted_model.py in tests) and a dummy API key;
  * tokens: griptape's SimpleTokenizer (characters per token), because the default OpenAiTokenizer
    needs tiktoken, which downloads its encoding files at run time;
  * everything else the structure might create by default (embeddings, vector store, ...) is
    griptape's Dummy* drivers, which fail loudly if ever called, instead of OpenAI ones.
"""
from __future__ import annotations

import logging
import os
from importlib import metadata

MODEL = "gpt-4o"
CHARACTERS_PER_TOKEN = 4
MAX_INPUT_TOKENS = 128_000
MAX_OUTPUT_TOKENS = 4_096


def griptape_version() -> str:
    return metadata.version("griptape")


def era() -> str:
    """Which stored shape this griptape writes: 'v0_27', 'v0_30' or 'v1'."""
    parts = griptape_version().split(".")
    major, minor = int(parts[0]), int(parts[1])
    if major >= 1 or minor >= 31:
        return "v1"
    if minor >= 28:
        return "v0_30"
    return "v0_27"


def configure_environment(endpoint: str) -> None:
    """Point boto3 at the local DynamoDB and keep every client offline."""
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = "us-east-1"
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ.setdefault("OPENAI_API_KEY", "sk-local-dummy")


def boto3_session():
    import boto3

    return boto3.Session(
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def quiet_griptape_logs() -> None:
    """griptape logs every prompt and reply at INFO through rich; keep warnings and errors only.

    0.30+ configure the "griptape" logger in Defaults.logging_config (1.x on first access, which
    would reset the level), so touch it first; 0.27 takes `logger_level` on the structure.
    """
    try:
        from griptape.configs import Defaults

        Defaults.logging_config  # noqa: B018 - creates (and so configures) the logger now
    except ImportError:
        pass
    logging.getLogger("griptape").setLevel(logging.WARNING)


# The driver's key names: the recipe's, unless build_agent is told others.
KEYS = {"partition_key": "id", "value_attribute_key": "value"}


def build_agent(*, table: str, session_id: str, model_url: str, endpoint: str, keys: dict | None = None):
    """An Agent remembering `session_id` in `table`, talking to the model at `model_url`.

    `keys` may name the driver's `partition_key`, `value_attribute_key`, `sort_key` and
    `sort_key_value` (griptape 0.28+ for the sort key)."""
    if keys:
        KEYS.update({k: v for k, v in keys.items() if v is not None})
    configure_environment(endpoint)
    quiet_griptape_logs()
    builder = {"v0_27": _agent_v0_27, "v0_30": _agent_v0_30, "v1": _agent_v1}[era()]
    return builder(table=table, session_id=session_id, model_url=model_url)


def _tokenizer(SimpleTokenizer):
    return SimpleTokenizer(
        characters_per_token=CHARACTERS_PER_TOKEN,
        max_input_tokens=MAX_INPUT_TOKENS,
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )


def _driver_args(table: str, session_id: str) -> dict:
    return dict(
        session=boto3_session(),
        table_name=table,
        partition_key_value=session_id,
        **KEYS,
    )


def _agent_v0_27(*, table, session_id, model_url):
    # 0.27: a per-structure StructureConfig (Dummy* drivers for whatever is not given; passing
    # prompt_driver= to the Agent itself is deprecated there); the memory takes `driver=`.
    from griptape.config import StructureConfig
    from griptape.drivers import AmazonDynamoDbConversationMemoryDriver, OpenAiChatPromptDriver
    from griptape.memory.structure import ConversationMemory
    from griptape.structures import Agent
    from griptape.tokenizers import SimpleTokenizer

    prompt_driver = OpenAiChatPromptDriver(
        model=MODEL, base_url=model_url, api_key=os.environ["OPENAI_API_KEY"], tokenizer=_tokenizer(SimpleTokenizer)
    )
    memory_driver = AmazonDynamoDbConversationMemoryDriver(**_driver_args(table, session_id))
    return Agent(
        config=StructureConfig(prompt_driver=prompt_driver, conversation_memory_driver=memory_driver),
        conversation_memory=ConversationMemory(driver=memory_driver),
        logger_level=logging.WARNING,
    )


def _agent_v0_30(*, table, session_id, model_url):
    # 0.30: global `Defaults.drivers_config`; the memory still takes `driver=`.
    from griptape.configs import Defaults
    from griptape.configs.drivers import DriversConfig
    from griptape.drivers import AmazonDynamoDbConversationMemoryDriver, OpenAiChatPromptDriver
    from griptape.memory.structure import ConversationMemory
    from griptape.structures import Agent
    from griptape.tokenizers import SimpleTokenizer

    prompt_driver = OpenAiChatPromptDriver(
        model=MODEL, base_url=model_url, api_key=os.environ["OPENAI_API_KEY"], tokenizer=_tokenizer(SimpleTokenizer)
    )
    memory_driver = AmazonDynamoDbConversationMemoryDriver(**_driver_args(table, session_id))
    Defaults.drivers_config = DriversConfig(prompt_driver=prompt_driver, conversation_memory_driver=memory_driver)
    return Agent(prompt_driver=prompt_driver, conversation_memory=ConversationMemory(driver=memory_driver))


def _agent_v1(*, table, session_id, model_url):
    # 1.x: provider-specific modules (importing from griptape.drivers is deprecated and warns);
    # the memory takes `conversation_memory_driver=`.
    from griptape.configs import Defaults
    from griptape.configs.drivers import DriversConfig
    from griptape.drivers.memory.conversation.amazon_dynamodb import AmazonDynamoDbConversationMemoryDriver
    from griptape.drivers.prompt.openai import OpenAiChatPromptDriver
    from griptape.memory.structure import ConversationMemory
    from griptape.structures import Agent
    from griptape.tokenizers import SimpleTokenizer

    prompt_driver = OpenAiChatPromptDriver(
        model=MODEL, base_url=model_url, api_key=os.environ["OPENAI_API_KEY"], tokenizer=_tokenizer(SimpleTokenizer)
    )
    memory_driver = AmazonDynamoDbConversationMemoryDriver(**_driver_args(table, session_id))
    Defaults.drivers_config = DriversConfig(prompt_driver=prompt_driver, conversation_memory_driver=memory_driver)
    return Agent(
        prompt_driver=prompt_driver,
        conversation_memory=ConversationMemory(conversation_memory_driver=memory_driver),
    )


def reply_text(agent) -> str:
    """The text of the agent's last output artifact."""
    return agent.output_task.output.value


def get_item(table: str, session_id: str) -> dict:
    """The stored item as GetItem returns it on the wire: low-level (typed) DynamoDB JSON."""
    client = boto3_session().client("dynamodb")
    return client.get_item(TableName=table, Key={"id": {"S": session_id}}, ConsistentRead=True).get("Item")
