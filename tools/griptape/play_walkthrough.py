"""Plays the seed's walkthrough with the griptape installed in the running interpreter.

Run with a griptape venv's python (make_fixtures.py does):

    play_walkthrough.py --endpoint URL --table NAME --model-url URL --result PATH

Both sessions are deleted first, then each message is one turn of a fresh Agent (as one Lambda
invocation of the recipe would be: load the session, run, store). Writes to PATH a JSON object:
{"griptape_version", "shape", "replies": {session: [reply, ...]}, "items": {session: Item}} where
Item is the stored item as GetItem returns it (low-level DynamoDB JSON).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gt_compat  # noqa: E402

WALKTHROUGH = {
    "user-id-123": ["Hello my name is Collin.", "What is my name?"],
    "group-id-123": ["Hello my name is Zach.", "And I'm Matt", "And I'm Collin, who all is here?"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="local DynamoDB endpoint, e.g. http://127.0.0.1:8000")
    parser.add_argument("--table", required=True)
    parser.add_argument("--model-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9/v1")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args()

    gt_compat.configure_environment(args.endpoint)
    client = gt_compat.boto3_session().client("dynamodb")
    for session_id in WALKTHROUGH:
        client.delete_item(TableName=args.table, Key={"id": {"S": session_id}})

    replies = {}
    for session_id, messages in WALKTHROUGH.items():
        replies[session_id] = []
        for message in messages:
            agent = gt_compat.build_agent(
                table=args.table, session_id=session_id, model_url=args.model_url, endpoint=args.endpoint
            )
            agent.run(message)
            reply = gt_compat.reply_text(agent)
            print(f"[{session_id}] {message!r} -> {reply!r}", file=sys.stderr)
            replies[session_id].append(reply)

    result = {
        "griptape_version": gt_compat.griptape_version(),
        "shape": gt_compat.era(),
        "replies": replies,
        "items": {s: gt_compat.get_item(args.table, s) for s in WALKTHROUGH},
    }
    with open(args.result, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
