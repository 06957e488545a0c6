#!/usr/bin/env python3
"""Writes the API Gateway events in this folder: the seed's five requests, as HTTP API (v2) and
REST API (v1) proxy events. Run it again after changing the list below."""
import base64
import json
import pathlib

HERE = pathlib.Path(__file__).parent
SEED = [
    ("1-collin-hello", "Hello my name is Collin.", "user-id-123"),
    ("2-collin-what-is-my-name", "What is my name?", "user-id-123"),
    ("3-zach-hello", "Hello my name is Zach.", "group-id-123"),
    ("4-matt-joins", "And I'm Matt", "group-id-123"),
    ("5-collin-who-is-here", "And I'm Collin, who all is here?", "group-id-123"),
]
HOST = "abc123defg.execute-api.us-east-1.amazonaws.com"


def http_api(n, body, encoded=False, method="POST", path="/chat", route="/chat"):
    return {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "content-length": str(len(body or "")),
            "content-type": "application/json",
            "host": HOST,
            "user-agent": "curl/8.5.0",
            "x-forwarded-for": "203.0.113.10",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123defg",
            "domainName": HOST,
            "domainPrefix": "abc123defg",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "curl/8.5.0",
            },
            "requestId": f"seed-http-{n}",
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": "25/Nov/2026:06:00:00 +0000",
            "timeEpoch": 1795500000000,
        },
        "body": base64.b64encode(body.encode()).decode() if encoded and body else body,
        "isBase64Encoded": encoded,
    }


def rest_api(n, body, method="POST", path="/chat", resource="/chat", params=None):
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "Host": HOST,
        "User-Agent": "curl/8.5.0",
        "X-Forwarded-For": "203.0.113.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123defg",
            "resourceId": "a1b2c3",
            "resourcePath": resource,
            "httpMethod": method,
            "path": "/prod" + path,
            "stage": "prod",
            "requestId": f"seed-rest-{n}",
            "requestTimeEpoch": 1795500000000,
            "protocol": "HTTP/1.1",
            "domainName": HOST,
            "identity": {"sourceIp": "203.0.113.10", "userAgent": "curl/8.5.0"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def write(path, event):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(event, indent=2) + "\n")


for name, message, session in SEED:
    body = json.dumps({"session_id": session, "message": message})
    write(HERE / "http-api" / f"{name}.json", http_api(name, body))
    write(HERE / "rest-api" / f"{name}.json", rest_api(name, body))

write(HERE / "http-api" / "base64-body.json",
      http_api("base64", json.dumps({"session_id": "b64-session", "message": "Hello my name is Ada."}),
               encoded=True))

# The session API, for the walkthrough's user session.
for method, name in (("GET", "get-session"), ("DELETE", "delete-session")):
    path = "/sessions/user-id-123"
    event = http_api(name, None, method=method, path=path, route="/sessions/{session_id}")
    event["pathParameters"] = {"session_id": "user-id-123"}
    del event["headers"]["content-type"], event["headers"]["content-length"]
    write(HERE / "http-api" / f"{name}.json", event)
    write(HERE / "rest-api" / f"{name}.json",
          rest_api(name, None, method=method, path=path, resource="/sessions/{session_id}",
                   params={"session_id": "user-id-123"}))
