"""The Python original: griptape's "Amazon DynamoDB sessions" recipe as a Lambda handler.

Run by awslambdaric (`python -m awslambdaric session_handler.handler`) in bench.py. Per request,
as the recipe's session.py does per command: an Agent whose ConversationMemory uses
AmazonDynamoDbConversationMemoryDriver (partition key `id`, value attribute `value`, partition
key value = the session id) runs the message. Reads the API Gateway event's JSON body
{"session_id", "message"} and answers {"session_id", "reply"}.

Kept offline and given its best showing, as a careful Lambda author would write it: the boto3
table and the prompt driver are made once per cold start and reused; the model is any
OpenAI-compatible server (OPENAI_BASE_URL); tokens are counted by SimpleTokenizer (4 characters
a token, as the default OpenAiTokenizer downloads tiktoken data at run time); griptape's INFO
logging of every prompt and reply through rich is turned down to warnings.

Environment: TABLE_NAME, OPENAI_BASE_URL, MODEL_ID, OPENAI_API_KEY (any), AWS_ENDPOINT_URL_DYNAMODB.
"""
import base64
import json
import logging
import os

import boto3
from griptape.configs import Defaults
from griptape.configs.drivers import DriversConfig
from griptape.drivers.memory.conversation.amazon_dynamodb import AmazonDynamoDbConversationMemoryDriver
from griptape.drivers.prompt.openai import OpenAiChatPromptDriver
from griptape.memory.structure import ConversationMemory
from griptape.structures import Agent
from griptape.tokenizers import SimpleTokenizer

TABLE = boto3.Session().resource(
    "dynamodb", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None
).Table(os.environ["TABLE_NAME"])

PROMPT_DRIVER = OpenAiChatPromptDriver(
    model=os.environ.get("MODEL_ID") or "gpt-4o",
    base_url=os.environ.get("OPENAI_BASE_URL") or None,
    api_key=os.environ.get("OPENAI_API_KEY") or "sk-local",
    tokenizer=SimpleTokenizer(characters_per_token=4, max_input_tokens=128_000, max_output_tokens=4_096),
)
# Dummy drivers for everything else, so nothing defaults to an OpenAI client needing tiktoken.
Defaults.drivers_config = DriversConfig(prompt_driver=PROMPT_DRIVER)
Defaults.logging_config  # noqa: B018 - configures the "griptape" logger now, so the next line sticks
logging.getLogger("griptape").setLevel(logging.WARNING)


def handler(event, context):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    request = json.loads(body)
    session_id, message = request["session_id"], request["message"]

    memory_driver = AmazonDynamoDbConversationMemoryDriver(
        table_name=TABLE.name,
        table=TABLE,
        partition_key="id",
        value_attribute_key="value",
        partition_key_value=session_id,
    )
    agent = Agent(
        prompt_driver=PROMPT_DRIVER,
        conversation_memory=ConversationMemory(conversation_memory_driver=memory_driver),
    )
    reply = agent.run(message).output_task.output.value
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"session_id": session_id, "reply": reply}),
    }
