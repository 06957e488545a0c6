"""One turn of a stored session with griptape 1.x: an interoperability check.

Run with the python of a venv made from requirements-v1.txt:

    continue_session.py --endpoint URL --table NAME --session ID --model-url URL --message TEXT

Loads the session's item with griptape's own AmazonDynamoDbConversationMemoryDriver (partition
key `id`, attribute `value`) and Agent, sends the message to the OpenAI-compatible server at
--model-url (with the stored conversation before it), lets griptape store the new run, and prints
the reply, and nothing else, on stdout. Logs and warnings go to stderr.

Exit status: 0 with the reply; 1 if griptape failed (an exception, or the model call failed and
the task's output is an ErrorArtifact: note that griptape 1.x stores that error as the run's
output all the same); 2 for bad arguments.
"""
import argparse
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint, e.g. http://127.0.0.1:8000")
    parser.add_argument("--table", required=True)
    parser.add_argument("--session", required=True, help="the session id (the item's `id`)")
    parser.add_argument("--model-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9/v1")
    parser.add_argument("--message", required=True)
    parser.add_argument("--partition-key", default="id")
    parser.add_argument("--value-attribute", default="value")
    parser.add_argument("--sort-key", default=None)
    parser.add_argument("--sort-key-value", default=None)
    parser.add_argument("--sort-key-number", action="store_true", help="the sort key's value is a number")
    args = parser.parse_args()
    sort_value = args.sort_key_value
    if sort_value is not None and args.sort_key_number:
        sort_value = int(sort_value)
    keys = {
        "partition_key": args.partition_key,
        "value_attribute_key": args.value_attribute,
        "sort_key": args.sort_key,
        "sort_key_value": sort_value,
    }

    # From here on, whatever writes to file descriptor 1 (rich's log handler, warnings, a stray
    # print in a library) lands on stderr; only the reply goes to the real stdout.
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    sys.path.insert(0, HERE)
    try:
        import gt_compat

        if gt_compat.era() != "v1":
            print(f"continue_session.py needs griptape 1.x, found {gt_compat.griptape_version()}", file=sys.stderr)
            return 2
        agent = gt_compat.build_agent(
            table=args.table, session_id=args.session, model_url=args.model_url, endpoint=args.endpoint, keys=keys
        )
        agent.run(args.message)
        output = agent.output_task.output
    except Exception:  # noqa: BLE001 - report any griptape failure as exit 1
        traceback.print_exc()
        return 1

    from griptape.artifacts import ErrorArtifact

    if isinstance(output, ErrorArtifact):
        print(f"the model call failed: {output.value}", file=sys.stderr)
        return 1
    stdout.write(output.value + "\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
