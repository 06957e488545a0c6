#!/usr/bin/env python3
"""A local DynamoDB-compatible server (moto's), for tests, `make watch` and `make demo`.

    dynamodb_local.py [--port N] [--table NAME]... [--exit-with-stdin]

Prints `PORT <n>` once it accepts requests (port 0 picks a free one). Requests are served one
at a time: moto checks a write's condition and applies the write in separate steps with no lock,
so under load two racing conditional writes can both pass, which DynamoDB never allows (seen
here: two UpdateItems conditioned on the same version both succeeded, losing a run). Serving one
request at a time gives moto the per-request atomicity DynamoDB guarantees, so concurrency tests
test the client, not moto's races. With --table it creates
the session table (key `id`, string; on demand; the owner index `by_owner`). With --exit-with-stdin it exits when its standard
input closes, so a test harness that dies never leaves it behind.
"""
import argparse
import logging
import os
import sys
import threading

os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))


def create_table(endpoint: str, name: str) -> None:
    import boto3

    client = boto3.client("dynamodb", endpoint_url=endpoint)
    # As template.yaml declares it: key `id`, and the owner index that lists a user's sessions.
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "owner_key", "AttributeType": "S"},
            {"AttributeName": "active_ms", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": "by_owner",
            "KeySchema": [
                {"AttributeName": "owner_key", "KeyType": "HASH"},
                {"AttributeName": "active_ms", "KeyType": "RANGE"},
            ],
            "Projection": {
                "ProjectionType": "INCLUDE",
                "NonKeyAttributes": ["session_id", "created_at", "updated_at", "run_count",
                                     "preview", "title", "tombstone"],
            },
        }],
        BillingMode="PAY_PER_REQUEST",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--table", action="append", default=[])
    parser.add_argument("--exit-with-stdin", action="store_true")
    args = parser.parse_args()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log

    moto_app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def atomic_app(environ, start_response):
        with one_at_a_time:
            result = moto_app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        return [body]

    server = make_server(args.host, args.port, atomic_app, threaded=True,
                         request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    for table in args.table:
        create_table(f"http://{args.host}:{port}", table)
    print(f"PORT {port}", flush=True)

    if args.exit_with_stdin:
        sys.stdin.read()
        os._exit(0)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
