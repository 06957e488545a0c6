"""The Responses API (`/v1`, src/http/responses/) driven by the real `openai` Python client,
against the local stack (conftest.py), every body and event checked against the vendored Open
Responses OpenAPI document (schema.py, tests/fixtures/openresponses/).

What is validated is the bytes the server sent: the client's `with_raw_response` gives the HTTP
answer (checked raw) and `.parse()` what the client makes of it; streams are read raw with
httpx2 (the client's HTTP library) and checked whole by `schema.validate_sse` (each event's
schema, `event:` equal to `type`, increasing `sequence_number`, the final `data: [DONE]`), and
through the client event by event. Error bodies are checked by `schema.validate_error_body`.

The scripted model (tools/scripted_model.py) answers from the history it is sent: "Hello my
name is Collin." then "What is my name?" is answered "Your name is Collin." only if the first
turn reached the model with the second, so a recalled name proves the chain.
"""
import base64
import contextlib
import json
import re
import threading
import time
import uuid

import httpx2
import openai
import pytest

import schema

RESPONSE_ID = re.compile(r"^resp_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")
MINTED_CONVERSATION = re.compile(r"^conv_[0-9a-f]{32}$")
MAX_MESSAGE_BYTES = 32 * 1024  # src/config.rs DEFAULT_MAX_MESSAGE_BYTES
STREAM_SHAPE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",  # one or more
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
# Options of the client's methods that are not body fields.
NOT_BODY = {"extra_headers", "extra_query", "extra_body", "timeout"}


# ---------------------------------------------------------------------------------------------
# Helpers


def body_of(params):
    """The JSON body the client sends for these `responses.create` keyword arguments."""
    body = {k: v for k, v in params.items() if k not in NOT_BODY}
    body.update(params.get("extra_body") or {})
    return body


def raw_json(raw):
    """The JSON of a `with_raw_response` answer, from its bytes."""
    return json.loads(raw.content)


def create(client, **params):
    """POST /v1/responses through the client: the request must be a valid CreateResponseBody
    (so the tests send what the specification allows) and the answer, raw, a valid
    ResponseResource. Returns (raw JSON, the client's parsed Response, raw answer)."""
    schema.validate(body_of(params), "CreateResponseBody")
    raw = client.responses.with_raw_response.create(**params)
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"].startswith("application/json")
    body = raw_json(raw)
    schema.validate(body, "ResponseResource")
    parsed = raw.parse()
    assert parsed.id == body["id"]
    assert parsed.output_text == text_of(body)
    return body, parsed, raw


def retrieve(client, response_id):
    raw = client.responses.with_raw_response.retrieve(response_id)
    assert raw.status_code == 200, raw.text
    body = raw_json(raw)
    schema.validate(body, "ResponseResource")
    assert raw.parse().id == response_id
    return body


def text_of(body):
    """The output text of a response body (its message items' output_text parts)."""
    return "".join(part["text"] for item in body["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def run_of(response_id):
    m = RESPONSE_ID.match(response_id)
    assert m, f"not a response id of the form resp_<run>.<base64url session>: {response_id!r}"
    return m.group(1)


def session_of(response_id):
    m = RESPONSE_ID.match(response_id)
    assert m, response_id
    encoded = m.group(2)
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def list_items(client, conversation_id, **params):
    """GET /v1/conversations/{id}/items, raw: every item a valid ItemField (a Message here)."""
    raw = client.conversations.items.with_raw_response.list(conversation_id, **params)
    assert raw.status_code == 200, raw.text
    page = raw_json(raw)
    check_list(page)
    raw.parse()
    return page


def check_list(page):
    assert page["object"] == "list", page
    assert isinstance(page["has_more"], bool), page
    for item in page["data"]:
        schema.validate(item, "ItemField")
        schema.validate(item, "Message")
    ids = [item["id"] for item in page["data"]]
    assert page.get("first_id") == (ids[0] if ids else None), page
    assert page.get("last_id") == (ids[-1] if ids else None), page


def item_text(item):
    return "".join(part["text"] for part in item["content"])


def said(page):
    """(role, text) of each item of a list page."""
    return [(item["role"], item_text(item)) for item in page["data"]]


def expect_error(call, status, code=None, param=...):
    """The call fails with `status`; its body, raw, is a valid Responses error body whose
    `code` and `param` are as given (param=... leaves it unchecked). Returns the error object."""
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return check_error(info.value.response, status, code, param)


def check_error(response, status, code=None, param=...):
    """An httpx2 response that is a Responses error (see expect_error)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    schema.validate_error_body(body)
    error = body["error"]
    if code is not None:
        assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    if status == 404:
        assert error["type"] == "not_found_error", error
    elif 400 <= status < 500 and status not in (401, 403, 429):
        assert error["type"] == "invalid_request_error", error
    return error


def by_key(items):
    return {item["id"]["S"]: item for item in items}


def table_changes(before, after):
    """What changed between two scans: [(added|removed|changed, key, kind)]."""
    before, after = by_key(before), by_key(after)
    kind = lambda item: item.get("kind", {}).get("S", "session")  # noqa: E731
    out = [("added", k, kind(after[k])) for k in after.keys() - before.keys()]
    out += [("removed", k, kind(before[k])) for k in before.keys() - after.keys()]
    out += [("changed", k, kind(after[k])) for k in after.keys() & before.keys() if after[k] != before[k]]
    return sorted(out)


@contextlib.contextmanager
def nothing_stored(stack):
    """Nothing in the table changes and the model is not asked while the block runs."""
    items, calls = stack.table_items(), len(stack.model_calls())
    yield
    assert len(stack.model_calls()) == calls, "the model was asked"
    changes = table_changes(items, stack.table_items())
    assert not changes, f"the table changed: {changes}"


# What a turn that stores nothing may still change (docs/storage.md): the head's counters, its
# reserved slot left a hole, a record of the failed response (`live`), and the view's bookkeeping.
BOOKKEEPING = {"head", "hole", "live"}
VIEW_BOOKKEEPING = {"active_ms", "view_through", "updated_at"}


@contextlib.contextmanager
def no_run_stored(stack):
    """No run is stored while the block runs: no run slot, part, summary, page or idempotency
    receipt is written, and the session's view (its runs, its count) is as it was; a failed turn
    may leave its bookkeeping (above)."""
    before = by_key(stack.table_items())
    yield
    after = by_key(stack.table_items())
    stored = []
    for change, key, kind in table_changes(list(before.values()), list(after.values())):
        if kind in BOOKKEEPING and "#idem#" not in key:
            continue
        if change == "changed" and kind == "session":
            fields = {f for f in before[key].keys() | after[key].keys() if before[key].get(f) != after[key].get(f)}
            if fields <= VIEW_BOOKKEEPING:
                continue
            key = f"{key} ({', '.join(sorted(fields))})"
        stored.append((change, key, kind))
    assert not stored, f"stored: {stored}"


@pytest.fixture(scope="session")
def raw_http(stack):
    """httpx2 on the function's root, for requests the client cannot make."""
    with httpx2.Client(base_url=stack.url, timeout=60) as c:
        yield c


def read_sse(raw_http, method, path, **kwargs):
    """A whole event-stream answer, validated: (events without [DONE], the httpx2 response)."""
    with raw_http.stream(method, path, **kwargs) as r:
        text = r.read().decode()
    assert r.status_code == 200, text
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    return schema.validate_sse(text), r


def shape(types):
    """Event types with each run of text deltas as one."""
    out = []
    for t in types:
        if not (t == "response.output_text.delta" and out and out[-1] == t):
            out.append(t)
    return out


def check_stream(events, response_id=None):
    """A whole streamed response: the events in order, numbered 0, 1, 2, ...; one response
    and one output item throughout; deltas adding up to the text done and the completed
    response's. Returns (response id, text, the completed response)."""
    types = [e["type"] for e in events]
    assert shape(types) == STREAM_SHAPE, types
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    first = events[0]["response"]
    assert first["status"] == "in_progress", first
    response_id = response_id or first["id"]
    for e in events:
        if "response" in e:
            assert e["response"]["id"] == response_id, e
    item_id = events[2]["item"]["id"]
    assert item_id == f"msg_{run_of(response_id)}.out"
    for e in events[3:-1]:
        assert e.get("item_id", e.get("item", {}).get("id")) == item_id, e
        assert e["output_index"] == 0, e
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == text
    part = next(e for e in events if e["type"] == "response.content_part.done")["part"]
    assert part["text"] == text
    item = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert item["status"] == "completed" and item_text(item) == text, item
    completed = events[-1]["response"]
    assert completed["status"] == "completed", completed
    assert text_of(completed) == text
    schema.validate(completed, "ResponseResource")
    return response_id, text, completed


def timeless(events):
    """Events with the responses' completed_at left out: two reads of one response made in
    different seconds may differ there while it is recomputed on every read (checked on its own
    by test_retrieve_is_the_same_response_later)."""
    out = []
    for e in events:
        if "response" in e:
            e = dict(e, response={k: v for k, v in e["response"].items() if k != "completed_at"})
        out.append(e)
    return out


def new_name():
    """A fresh capitalised name the scripted model recognises ("my name is X": letters)."""
    return "N" + "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes[:8])


def last_prompt(stack):
    """The messages of the model's last call."""
    return stack.model_calls()[-1]["body"]["messages"]


def contents(messages):
    out = []
    for m in messages:
        c = m.get("content")
        out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c or []))
    return out


# ---------------------------------------------------------------------------------------------
# Creating and reading responses


def test_create_with_string_input(client, stack):
    body, parsed, _ = create(
        client, model="gpt-test", input="Hello my name is Collin.",
        instructions="Answer in one sentence.", metadata={"topic": "names", "n": "1"},
        temperature=0.5, max_output_tokens=50)
    assert body["object"] == "response"
    assert body["status"] == "completed" and parsed.status == "completed"
    assert body["model"] == "gpt-test"
    assert parsed.output_text == "Hello Collin! How can I assist you today?"
    assert body["instructions"] == "Answer in one sentence."
    assert body["metadata"] == {"topic": "names", "n": "1"}
    assert body["temperature"] == 0.5 and body["max_output_tokens"] == 50
    assert body["previous_response_id"] is None
    assert body["conversation"] is None
    assert body["error"] is None and body["store"] is True
    assert isinstance(body["completed_at"], int) and body["completed_at"] >= body["created_at"]
    assert abs(body["created_at"] - time.time()) < 120

    # A fresh conversation of its own, named in the id.
    assert MINTED_CONVERSATION.match(session_of(body["id"])), body["id"]
    (message,) = body["output"]
    assert message["id"] == f"msg_{run_of(body['id'])}.out"
    assert message["role"] == "assistant" and message["status"] == "completed"

    # Usage as the model reported it.
    usage = body["usage"]
    reported = stack.model_calls()[-1]["usage"]
    assert usage["input_tokens"] == reported["prompt_tokens"] > 0
    assert usage["output_tokens"] == reported["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == reported["prompt_tokens_details"]["cached_tokens"]
    assert parsed.usage.input_tokens_details.cached_tokens == usage["input_tokens_details"]["cached_tokens"]

    # What the model was asked: the instructions, the message, the options.
    call = stack.model_calls()[-1]["body"]
    assert any("Answer in one sentence." in c for m, c in zip(call["messages"], contents(call["messages"]))
               if m["role"] in ("system", "developer")), call["messages"]
    assert contents(call["messages"])[-1] == "Hello my name is Collin."
    assert call.get("temperature") == 0.5
    assert 50 in (call.get("max_tokens"), call.get("max_completion_tokens")), call

    again = retrieve(client, body["id"])
    for field in ("id", "status", "model", "output", "metadata", "usage", "instructions",
                  "temperature", "max_output_tokens", "previous_response_id", "conversation",
                  "created_at"):
        assert again[field] == body[field], field


def test_retrieve_is_the_same_response_later(client):
    """A stored response reads back as it was answered, completed_at included."""
    body, _, _ = create(client, input="Hello my name is Bea.", metadata={"k": "v"})
    time.sleep(1.1)
    assert retrieve(client, body["id"]) == body


def test_create_with_input_items(client, stack):
    name = new_name()
    body, parsed, _ = create(client, model="gpt-test", input=[
        {"type": "message", "role": "developer", "content": "Answer briefly."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Hello "},
                     {"type": "input_text", "text": f"my name is {name}."}]},
    ])
    assert body["status"] == "completed"
    assert parsed.output_text == f"Hello {name}! How can I assist you today?"
    messages = last_prompt(stack)
    assert contents(messages)[-1] == f"Hello my name is {name}."
    assert messages[-1]["role"] == "user"
    assert any("Answer briefly." in c for m, c in zip(messages, contents(messages))
               if m["role"] in ("system", "developer")), messages
    # A system message with a string content part, too.
    body, _, _ = create(client, input=[
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be kind."}]},
        {"type": "message", "role": "user", "content": "What is my name?"},
    ])
    assert text_of(body) == "I don't know your name yet."  # a new conversation


def test_cached_tokens_reported(client, stack):
    """A second turn whose prompt starts with the first one's (over 1,024 tokens) is served
    partly from the model's prompt cache: the response says how much."""
    long = f"Hello my name is Collin. {uuid.uuid4().hex} " + "lorem ipsum " * 700
    first, _, _ = create(client, input=long)
    assert first["usage"]["input_tokens_details"]["cached_tokens"] == 0
    second, parsed, _ = create(client, input="What is my name?", previous_response_id=first["id"])
    assert parsed.output_text == "Your name is Collin."
    cached = stack.model_calls()[-1]["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024
    assert second["usage"]["input_tokens_details"]["cached_tokens"] == cached
    assert retrieve(client, second["id"])["usage"] == second["usage"]


# ---------------------------------------------------------------------------------------------
# Chaining


def test_chain_by_previous_response_id(client, stack):
    first, _, _ = create(client, input="Hello my name is Collin.")
    second, parsed, _ = create(client, input="What is my name?", previous_response_id=first["id"])
    assert parsed.output_text == "Your name is Collin."
    assert second["previous_response_id"] == first["id"]
    assert second["conversation"] is None
    assert session_of(second["id"]) == session_of(first["id"])
    # The model was sent the first turn, its stored reply, then the question.
    assert contents(last_prompt(stack))[-3:] == [
        "Hello my name is Collin.", text_of(first), "What is my name?"]

    # Branching: another answer after the FIRST response is a response of its own.
    branch, parsed, _ = create(client, input="Who am I?", previous_response_id=first["id"])
    assert parsed.output_text == "Your name is Collin."
    assert branch["id"] not in (first["id"], second["id"])
    assert branch["previous_response_id"] == first["id"]
    assert contents(last_prompt(stack))[-3:] == [
        "Hello my name is Collin.", text_of(first), "Who am I?"]
    for body in (first, second, branch):
        again = retrieve(client, body["id"])
        assert text_of(again) == text_of(body)
        assert again["previous_response_id"] == body["previous_response_id"]

    # Continuing the branch left behind.
    third, parsed, _ = create(client, input="what's my name", previous_response_id=second["id"])
    assert parsed.output_text == "Your name is Collin."
    assert contents(last_prompt(stack))[-5:] == [
        "Hello my name is Collin.", text_of(first), "What is my name?", text_of(second),
        "what's my name"]
    assert retrieve(client, branch["id"])["output"] == branch["output"]


# ---------------------------------------------------------------------------------------------
# Conversations


def test_conversation_turns_and_items(client, stack):
    raw = client.conversations.with_raw_response.create()
    conversation = raw_json(raw)
    cid = conversation["id"]
    assert conversation["object"] == "conversation"
    assert isinstance(conversation["created_at"], int) and abs(conversation["created_at"] - time.time()) < 120
    assert conversation["metadata"] == {}
    assert raw.parse().id == cid

    first, _, _ = create(client, input="Hello my name is Collin.", conversation=cid)
    second, parsed, _ = create(client, input="What is my name?", conversation={"id": cid})
    assert parsed.output_text == "Your name is Collin."
    for body in (first, second):
        assert body["conversation"] == {"id": cid}
        assert session_of(body["id"]) == cid
        assert body["previous_response_id"] is None

    page = list_items(client, cid)  # newest first by default
    assert said(page) == [("assistant", "Your name is Collin."), ("user", "What is my name?"),
                          ("assistant", text_of(first)), ("user", "Hello my name is Collin.")]
    r1, r2 = run_of(first["id"]), run_of(second["id"])
    assert [i["id"] for i in page["data"]] == [f"msg_{r2}.out", f"msg_{r2}.in", f"msg_{r1}.out", f"msg_{r1}.in"]
    assert page["has_more"] is False
    assert page["data"][0] == second["output"][0]
    for item in page["data"]:
        assert item["status"] == "completed"
        kind = "input_text" if item["role"] == "user" else "output_text"
        assert [p["type"] for p in item["content"]] == [kind]

    ascending = list_items(client, cid, order="asc")
    assert ascending["data"] == page["data"][::-1]

    # Paged one at a time by the client (after=last_id).
    paged = [item.id for item in client.conversations.items.list(cid, limit=1)]
    assert paged == [i["id"] for i in page["data"]]
    two = list_items(client, cid, limit=2, order="asc")
    assert two["has_more"] is True and [i["id"] for i in two["data"]] == [f"msg_{r1}.in", f"msg_{r1}.out"]
    rest = list_items(client, cid, limit=2, order="asc", after=two["last_id"])
    assert rest["has_more"] is False and [i["id"] for i in rest["data"]] == [f"msg_{r2}.in", f"msg_{r2}.out"]

    for item in page["data"]:
        raw = client.conversations.items.with_raw_response.retrieve(item["id"], conversation_id=cid)
        got = raw_json(raw)
        schema.validate(got, "ItemField")
        assert got == item
        assert raw.parse().id == item["id"]

    raw = client.conversations.with_raw_response.retrieve(cid)
    assert raw_json(raw)["id"] == cid and raw_json(raw)["object"] == "conversation"


def test_conversation_items_added_and_deleted(client, stack):
    cid = client.conversations.create().id
    first, _, _ = create(client, input="Hello there.", conversation=cid)
    name = new_name()
    calls = len(stack.model_calls())
    raw = client.conversations.items.with_raw_response.create(cid, items=[
        {"type": "message", "role": "user", "content": f"Hello my name is {name}."},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": f"Nice to meet you, {name}."}]},
    ])
    added = raw_json(raw)
    check_list(added)
    raw.parse()
    assert said(added) == [("user", f"Hello my name is {name}."), ("assistant", f"Nice to meet you, {name}.")]
    assert len(stack.model_calls()) == calls, "adding items asked the model"
    run = added["data"][0]["id"].removeprefix("msg_").removesuffix(".in")
    assert [i["id"] for i in added["data"]] == [f"msg_{run}.in", f"msg_{run}.out"]

    page = list_items(client, cid, order="asc")
    assert said(page) == [("user", "Hello there."), ("assistant", text_of(first)),
                          ("user", f"Hello my name is {name}."), ("assistant", f"Nice to meet you, {name}.")]

    # The added turn is history the model is sent.
    asked, parsed, _ = create(client, input="What is my name?", conversation=cid)
    assert parsed.output_text == f"Your name is {name}."
    assert contents(last_prompt(stack))[-3:] == [
        f"Hello my name is {name}.", f"Nice to meet you, {name}.", "What is my name?"]

    # Deleting an item deletes its turn (both halves).
    raw = client.conversations.items.with_raw_response.delete(f"msg_{run}.in", conversation_id=cid)
    assert raw.status_code == 200, raw.text
    assert raw_json(raw)["id"] == cid and raw_json(raw)["object"] == "conversation"
    page = list_items(client, cid, order="asc")
    assert [i["id"] for i in page["data"]] == [
        f"msg_{run_of(first['id'])}.in", f"msg_{run_of(first['id'])}.out",
        f"msg_{run_of(asked['id'])}.in", f"msg_{run_of(asked['id'])}.out"]
    for gone in (f"msg_{run}.in", f"msg_{run}.out"):
        expect_error(lambda: client.conversations.items.retrieve(gone, conversation_id=cid),
                     404, "item_not_found")
    expect_error(lambda: client.conversations.items.delete(f"msg_{run}.out", conversation_id=cid),
                 404, "item_not_found")
    # ... and the model no longer hears of it.
    _, parsed, _ = create(client, input="What is my name?", conversation=cid)
    assert parsed.output_text == "I don't know your name yet."


def test_conversation_created_with_items(client, stack):
    name = new_name()
    calls = len(stack.model_calls())
    raw = client.conversations.with_raw_response.create(items=[
        {"type": "message", "role": "user", "content": f"I am {name}."},
        {"type": "message", "role": "assistant", "content": f"Hi {name}."},
    ])
    cid = raw_json(raw)["id"]
    assert len(stack.model_calls()) == calls
    assert said(list_items(client, cid, order="asc")) == [("user", f"I am {name}."), ("assistant", f"Hi {name}.")]
    _, parsed, _ = create(client, input="What is my name?", conversation=cid)
    assert parsed.output_text == f"Your name is {name}."


def test_conversation_metadata(client):
    raw = client.conversations.with_raw_response.create(metadata={"topic": "names"})
    assert raw.status_code == 200, raw.text
    created = raw_json(raw)
    assert created["metadata"] == {"topic": "names"}
    cid = created["id"]
    assert client.conversations.retrieve(cid).metadata == {"topic": "names"}

    raw = client.conversations.with_raw_response.update(cid, metadata={"title": "About names", "topic": "names"})
    assert raw.status_code == 200, raw.text
    assert raw_json(raw)["metadata"] == {"title": "About names", "topic": "names"}
    got = raw_json(client.conversations.with_raw_response.retrieve(cid))
    assert got["metadata"] == {"title": "About names", "topic": "names"}

    # A conversation with turns keeps its metadata across them.
    create(client, input="Hello my name is Collin.", conversation=cid)
    assert client.conversations.retrieve(cid).metadata == {"title": "About names", "topic": "names"}
    client.conversations.update(cid, metadata={"title": "Renamed"})
    assert client.conversations.retrieve(cid).metadata == {"title": "Renamed"}


def test_conversation_deleted(client, stack):
    cid = client.conversations.create().id
    body, _, _ = create(client, input="Hello my name is Collin.", conversation=cid)
    raw = client.conversations.with_raw_response.delete(cid)
    assert raw.status_code == 200, raw.text
    assert raw_json(raw) == {"id": cid, "object": "conversation.deleted", "deleted": True}
    assert raw.parse().deleted is True
    expect_error(lambda: client.conversations.retrieve(cid), 404, "conversation_not_found")
    expect_error(lambda: client.conversations.items.list(cid), 404, "conversation_not_found")
    expect_error(lambda: client.responses.retrieve(body["id"]), 404, "response_not_found")
    expect_error(lambda: client.conversations.delete(cid), 404, "conversation_not_found")

    # A conversation never used (made, then deleted) is gone too.
    empty = client.conversations.create().id
    client.conversations.delete(empty)
    expect_error(lambda: client.conversations.retrieve(empty), 404, "conversation_not_found")


def test_unknown_conversation(client):
    for cid in ("no-such-conversation", "conv_" + "0" * 32):
        expect_error(lambda: client.conversations.retrieve(cid), 404, "conversation_not_found")
        expect_error(lambda: client.conversations.items.list(cid), 404, "conversation_not_found")
    cid = client.conversations.create().id
    expect_error(lambda: client.conversations.items.retrieve("msg_nope.in", conversation_id=cid),
                 404, "item_not_found")
    expect_error(lambda: client.conversations.items.list(cid, order="sideways"), 400,
                 "invalid_request", "order")
    for limit in (0, 101):
        expect_error(lambda: client.conversations.items.list(cid, limit=limit), 400,
                     "invalid_request", "limit")


# ---------------------------------------------------------------------------------------------
# Streaming


def test_stream_with_the_client(client, stack):
    name = new_name()
    stream = client.responses.create(input=f"Hello my name is {name}.", stream=True,
                                     metadata={"via": "stream"})
    parsed = list(stream)
    events = [e.model_dump(mode="json", exclude_unset=True) for e in parsed]
    for event in events:
        schema.validate_event(event)
    assert [e.type for e in parsed] == [e["type"] for e in events]
    response_id, text, completed = check_stream(events)
    assert text == f"Hello {name}! How can I assist you today?"
    assert sum(e["type"] == "response.output_text.delta" for e in events) >= 3
    assert parsed[-1].response.output_text == text
    assert completed["metadata"] == {"via": "stream"}
    usage = completed["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert "cached_tokens" in usage["input_tokens_details"]
    for e in events[:2]:
        assert e["response"]["output"] == [] and e["response"]["usage"] is None

    again = retrieve(client, response_id)
    assert text_of(again) == text
    assert again["usage"] == usage and again["metadata"] == {"via": "stream"}
    assert again["output"] == completed["output"]

    # The next turn (not streamed) continues it.
    _, parsed, _ = create(client, input="What is my name?", previous_response_id=response_id)
    assert parsed.output_text == f"Your name is {name}."


def test_stream_raw(client, raw_http):
    """The stream's bytes: every event valid, `event:` = `type`, numbered, then [DONE]."""
    body = {"model": "gpt-test", "input": "Hello my name is Collin.", "stream": True,
            "instructions": "Be brief."}
    schema.validate(body, "CreateResponseBody")
    events, r = read_sse(raw_http, "POST", "/v1/responses", json=body)
    assert r.headers.get("cache-control") == "no-cache"
    response_id, text, completed = check_stream(events)
    assert text == "Hello Collin! How can I assist you today?"
    assert completed["model"] == "gpt-test" and completed["instructions"] == "Be brief."
    assert text_of(retrieve(client, response_id)) == text

    # background: true goes with stream: true.
    events, _ = read_sse(raw_http, "POST", "/v1/responses",
                         json={"input": "Hello my name is Dee.", "stream": True, "background": True})
    _, _, completed = check_stream(events)
    assert completed["background"] is True


def test_resume_stream(client, raw_http):
    name = new_name()
    live = [e.model_dump(mode="json", exclude_unset=True)
            for e in client.responses.create(input=f"Hello my name is {name}, nice to meet you.", stream=True)]
    response_id, text, _ = check_stream(live)
    deltas = [e for e in live if e["type"] == "response.output_text.delta"]
    assert len(deltas) >= 4

    # All of it again.
    events, _ = read_sse(raw_http, "GET", f"/v1/responses/{response_id}", params={"stream": "true"})
    _, again, _ = check_stream(events, response_id)
    assert again == text

    # After the third delta: the rest of the text, numbered as it was live.
    n = deltas[2]["sequence_number"]
    events, _ = read_sse(raw_http, "GET", f"/v1/responses/{response_id}",
                         params={"stream": "true", "starting_after": str(n)})
    assert events, "nothing after starting_after"
    assert all(e["sequence_number"] > n for e in events), [e["sequence_number"] for e in events]
    assert events[0]["sequence_number"] == n + 1
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["sequence_number"] == live[-1]["sequence_number"]
    before = "".join(e["delta"] for e in deltas[:3])
    after = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert before + after == text

    # Through the client.
    resumed = [e.model_dump(mode="json", exclude_unset=True)
               for e in client.responses.retrieve(response_id, stream=True, starting_after=n)]
    assert timeless(resumed) == timeless(events)

    # After the last event: nothing but [DONE].
    events, _ = read_sse(raw_http, "GET", f"/v1/responses/{response_id}",
                         params={"stream": "true", "starting_after": str(live[-1]["sequence_number"])})
    assert events == []


def test_in_progress_response(stack, raw_http):
    """While a response streams, GET reads it in progress, and GET ?stream=true&starting_after=N
    follows it live from event N on to the end: the same events the stream itself sent."""
    stack.script({"word_delay": 0.2})
    body = {"input": "one two three four five six seven eight nine", "stream": True, "background": True}
    schema.validate(body, "CreateResponseBody")
    with raw_http.stream("POST", "/v1/responses", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        head = []
        for line in lines:
            head.append(line)
            if line.startswith("data: ") and sum('"response.output_text.delta"' in x for x in head) == 2:
                break
        so_far = schema.validate_sse("\n".join(head) + "\n\n" + "data: [DONE]\n\n")
        response_id = so_far[0]["response"]["id"]
        n = so_far[-1]["sequence_number"]

        mid = raw_http.get(f"/v1/responses/{response_id}")
        assert mid.status_code == 200, mid.text
        mid = mid.json()
        schema.validate(mid, "ResponseResource")
        assert mid["status"] == "in_progress" and mid["usage"] is None and mid["completed_at"] is None, mid
        assert mid["background"] is True
        partial = text_of(mid)
        resumed, _ = read_sse(raw_http, "GET", f"/v1/responses/{response_id}",
                              params={"stream": "true", "starting_after": str(n)})
        rest = list(lines)
    live = schema.validate_sse("\n".join(head + rest) + "\n")
    _, text, _ = check_stream(live)
    assert text.startswith(partial) and text.startswith("".join(e["delta"] for e in so_far[4:]))
    assert timeless(resumed) == timeless(e for e in live if e["sequence_number"] > n)


def test_input_items(client):
    name = new_name()
    body, _, _ = create(client, input=f"Hello my name is {name}.")
    raw = client.responses.input_items.with_raw_response.list(body["id"])
    assert raw.status_code == 200, raw.text
    page = raw_json(raw)
    check_list(page)
    (item,) = page["data"]
    assert item["id"] == f"msg_{run_of(body['id'])}.in"
    assert item["role"] == "user" and item["type"] == "message"
    assert item["content"] == [{"type": "input_text", "text": f"Hello my name is {name}."}]
    assert page["has_more"] is False
    assert [i.id for i in client.responses.input_items.list(body["id"])] == [item["id"]]


def test_delete_response(client, raw_http):
    cid = client.conversations.create().id
    kept, _, _ = create(client, input="Hello my name is Collin.", conversation=cid)
    body, _, _ = create(client, input="What is my name?", conversation=cid)
    raw = client.responses.with_raw_response.delete(body["id"])
    assert raw.status_code == 200, raw.text
    assert raw_json(raw) == {"id": body["id"], "object": "response", "deleted": True}
    expect_error(lambda: client.responses.retrieve(body["id"]), 404, "response_not_found")
    expect_error(lambda: client.responses.input_items.list(body["id"]), 404, "response_not_found")
    expect_error(lambda: client.responses.delete(body["id"]), 404, "response_not_found")
    r = raw_http.get(f"/v1/responses/{body['id']}", params={"stream": "true"})
    check_error(r, 404, "response_not_found")
    # Its items left the conversation; the one before stays.
    assert [i["id"] for i in list_items(client, cid, order="asc")["data"]] == [
        f"msg_{run_of(kept['id'])}.in", f"msg_{run_of(kept['id'])}.out"]
    assert text_of(retrieve(client, kept["id"])) == text_of(kept)


def test_cancel_completed_response(client, stack):
    body, _, _ = create(client, input="Hello.")
    with nothing_stored(stack):
        expect_error(lambda: client.responses.cancel(body["id"]), 400)
    assert retrieve(client, body["id"])["status"] == "completed"


@pytest.mark.parametrize("where", ["alone", "conversation"])
def test_idempotency_key(client, stack, raw_http, where):
    """The same Idempotency-Key and body: the same response again (Idempotent-Replayed: true),
    the model asked once; the key with another body: 409. Alone (a conversation of its own
    each time) as in a conversation."""
    scope = {"conversation": client.conversations.create().id} if where == "conversation" else {}
    key = "idem-" + uuid.uuid4().hex
    params = dict(input="Hello my name is Collin.", extra_headers={"Idempotency-Key": key}, **scope)
    first, _, raw = create(client, **params)
    assert raw.headers.get("idempotent-replayed") is None
    calls = len(stack.model_calls())
    again, _, raw = create(client, **params)
    assert (again["id"], raw.headers.get("idempotent-replayed")) == (first["id"], "true")
    assert again["output"] == first["output"]
    assert len(stack.model_calls()) == calls
    # The same key with another body is refused.
    calls = len(stack.model_calls())
    with no_run_stored(stack):
        error = expect_error(lambda: client.responses.create(
            input="Something else.", extra_headers={"Idempotency-Key": key}, **scope), 409)
    assert len(stack.model_calls()) == calls
    assert error["code"] == "idempotency_key_reused"

    # Streamed, replayed as the same response.
    key = "idem-" + uuid.uuid4().hex
    body = {"input": "Hello my name is Dee.", "stream": True, **scope}
    events, r = read_sse(raw_http, "POST", "/v1/responses", json=body, headers={"Idempotency-Key": key})
    response_id, text, _ = check_stream(events)
    calls = len(stack.model_calls())
    events, r = read_sse(raw_http, "POST", "/v1/responses", json=body, headers={"Idempotency-Key": key})
    replayed_id, replayed, _ = check_stream(events)
    assert (replayed_id, replayed, r.headers.get("idempotent-replayed")) == (response_id, text, "true")
    assert len(stack.model_calls()) == calls


def test_concurrent_turns(stack, make_client):
    """8 turns at once in one conversation (through 4 instances): every one answered (503s,
    with Retry-After, retried by the client), and all 16 messages stored."""
    answers = []
    lock = threading.Lock()

    def seen(response):
        if response.request.url.path.endswith("/v1/responses"):
            with lock:
                answers.append((response.status_code, response.headers.get("retry-after")))

    http_client = httpx2.Client(event_hooks={"response": [seen]}, timeout=120)
    client = make_client(max_retries=10, http_client=http_client, timeout=120)
    cid = client.conversations.create().id
    n = 8
    # Each model call takes 0.5 s, so turns that run at once overlap at the model.
    stack.script(*[{"hang": 0.5}] * n)
    calls = len(stack.model_calls())
    barrier = threading.Barrier(n)
    results, failures = [None] * n, []

    def turn(i):
        barrier.wait()
        try:
            results[i] = create(client, input=f"Turn {i}: hello there.", conversation=cid,
                                extra_headers={"Idempotency-Key": f"turn-{cid}-{i}"})[0]
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append((i, repr(e)))

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    statuses = [s for s, _ in answers]
    print(f"concurrent turns: {len(answers)} answers: {statuses}")
    assert statuses.count(200) == n, answers
    assert all(s in (200, 503) for s in statuses), answers
    assert all(retry for s, retry in answers if s == 503), f"a 503 without Retry-After: {answers}"
    ids = [r["id"] for r in results]
    assert len(set(ids)) == n
    for i, r in enumerate(results):
        assert r["conversation"] == {"id": cid}
        assert text_of(r).startswith(f"You said: Turn {i}: hello there.")

    page = list_items(client, cid, limit=100, order="asc")
    assert len(page["data"]) == 2 * n, said(page)
    inputs = [item_text(i) for i in page["data"] if i["role"] == "user"]
    assert sorted(inputs) == sorted(f"Turn {i}: hello there." for i in range(n))
    assert {i["id"] for i in page["data"]} == {f"msg_{run_of(x)}.{h}" for x in ids for h in ("in", "out")}
    # They did run at once: model calls overlapped.
    starts = sorted(c["received_at"] for c in stack.model_calls()[calls:])
    assert len(starts) == n, starts
    at_once = max(sum(1 for t in starts if s <= t < s + 0.5) for s in starts)
    print(f"concurrent turns: up to {at_once} model calls at once")
    assert at_once >= 2, starts
    client.close()
    http_client.close()


# ---------------------------------------------------------------------------------------------
# Function calls

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def test_function_call_round_trip(client, stack, raw_http):
    """The model's call comes back as a function_call item; its output, sent with
    previous_response_id, reaches the model after the call (as chat completions take them) and
    is answered; retrieved, the call is still there; streamed, its arguments are events."""
    body, parsed, _ = create(client, input="What is the weather in Paris?", tools=[WEATHER_TOOL])
    calls = [item for item in body["output"] if item["type"] == "function_call"]
    assert len(calls) == 1, body["output"]
    schema.validate(calls[0], "FunctionCall")
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert body["tools"][0]["name"] == "get_weather"
    sent = stack.model_calls()[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather", sent
    assert retrieve(client, body["id"])["output"] == body["output"]

    call = next(o for o in parsed.output if o.type == "function_call")
    result = json.dumps({"temperature": "15 C"})
    answered, parsed2, _ = create(
        client, previous_response_id=parsed.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": result}])
    assert parsed2.output_text == f"get_weather says: {result}"
    prompt = last_prompt(stack)
    assert prompt[-2]["tool_calls"][0]["id"] == call.call_id, prompt
    assert prompt[-1] == {"role": "tool", "content": result, "tool_call_id": call.call_id}
    expect_error(lambda: client.responses.create(
        previous_response_id=parsed.id,
        input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]),
        400, "invalid_request", "input")

    events, _ = read_sse(raw_http, "POST", "/v1/responses",
                         json={"input": "And the weather in Oslo?", "tools": [WEATHER_TOOL], "stream": True})
    types = [e["type"] for e in events]
    for t in ("response.output_item.added", "response.function_call_arguments.delta",
              "response.function_call_arguments.done", "response.output_item.done", "response.completed"):
        assert t in types, types
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"city": "Oslo"}
    completed = events[-1]["response"]
    assert [i["type"] for i in completed["output"]] == ["function_call"], completed["output"]


# ---------------------------------------------------------------------------------------------
# Refused requests: a 4xx in the Responses shape, naming the field, and nothing stored


@pytest.fixture(scope="module")
def conversation(client):
    """A conversation with one turn, for requests that must leave it as it is."""
    cid = client.conversations.create().id
    first, _, _ = create(client, input="Hello my name is Collin.", conversation=cid)
    return cid, first


TOO_LONG = "x" * (MAX_MESSAGE_BYTES + 1)

BAD_BODIES = [
    # (id, body fields beside `conversation`, status, code, param)
    ("no input", {}, 400, "invalid_request", "input"),
    ("input null", {"input": None}, 400, "invalid_request", "input"),
    ("input a number", {"input": 3}, 400, "invalid_request", "input"),
    ("input empty list", {"input": []}, 400, "invalid_request", "input"),
    ("input blank", {"input": "   "}, 400, None, "input"),
    ("input only a developer message", {"input": [{"role": "developer", "content": "Be brief."}]},
     400, "invalid_request", "input"),
    ("input an assistant message", {"input": [{"role": "assistant", "content": "Hi."}]}, 400, None, "input"),
    ("input an image", {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}, 400, "unsupported", "input"),
    ("temperature 9", {"input": "Hi.", "temperature": 9}, 400, "invalid_request", "temperature"),
    ("temperature a string", {"input": "Hi.", "temperature": "hot"}, 400, "invalid_request", "temperature"),
    ("max_output_tokens 0", {"input": "Hi.", "max_output_tokens": 0}, 400, "invalid_request", "max_output_tokens"),
    ("store false", {"input": "Hi.", "store": False}, 400, "unsupported", "store"),
    ("store false streamed", {"input": "Hi.", "store": False, "stream": True}, 400, "unsupported", "store"),
    ("background without stream", {"input": "Hi.", "background": True}, 400, "unsupported", "background"),
    ("unknown parameter", {"input": "Hi.", "frobnicate": 1}, 400, "invalid_request", "frobnicate"),
    ("metadata non-string value", {"input": "Hi.", "metadata": {"k": 1}}, 400, "invalid_request", "metadata"),
    ("metadata 17 pairs", {"input": "Hi.", "metadata": {f"k{i}": "v" for i in range(17)}},
     400, "invalid_request", "metadata"),
    ("metadata value too long", {"input": "Hi.", "metadata": {"k": "v" * 513}}, 400, "invalid_request", "metadata"),
    ("tools web_search", {"input": "Hi.", "tools": [{"type": "web_search"}]}, 400, "unsupported", "tools"),
    ("too long a message", {"input": TOO_LONG}, 413, "message_too_long", "input"),
    ("too long a message in items", {"input": [{"role": "user", "content": [
        {"type": "input_text", "text": TOO_LONG}]}]}, 413, "message_too_long", "input"),
    ("model a number", {"input": "Hi.", "model": 7}, 400, "invalid_request", "model"),
    ("stream a string", {"input": "Hi.", "stream": "yes"}, 400, "invalid_request", "stream"),
]


@pytest.mark.parametrize("fields,status,code,param", [c[1:] for c in BAD_BODIES],
                         ids=[c[0] for c in BAD_BODIES])
def test_bad_body(client, stack, conversation, fields, status, code, param):
    cid, _ = conversation
    before = list_items(client, cid)
    known = {"input", "model", "temperature", "max_output_tokens", "store", "stream",
             "background", "metadata", "tools"}
    kwargs = {k: v for k, v in fields.items() if k in known}
    extra = {k: v for k, v in fields.items() if k not in known}
    with nothing_stored(stack):
        expect_error(lambda: client.responses.create(conversation=cid, **kwargs, extra_body=extra or None),
                     status, code, param)
        # The same without a conversation (one would be made): nothing either.
        expect_error(lambda: client.responses.create(**kwargs, extra_body=extra or None),
                     status, code, param)
    assert list_items(client, cid) == before


def test_bad_previous_response_id(client, stack, conversation):
    cid, first = conversation
    before = list_items(client, cid)
    deleted, _, _ = create(client, input="Hello.")
    client.responses.delete(deleted["id"])
    unknown_run = "resp_" + uuid.uuid4().hex + "." + base64.urlsafe_b64encode(cid.encode()).decode().rstrip("=")
    with nothing_stored(stack):
        for previous in ("nope", deleted["id"], unknown_run, "resp_" + "0" * 32 + ".!!"):
            expect_error(lambda: client.responses.create(input="Hi.", previous_response_id=previous),
                         400, "invalid_request", "previous_response_id")
        for stream in (False, True):
            expect_error(lambda: client.responses.create(input="Hi.", previous_response_id="nope", stream=stream),
                         400, "invalid_request", "previous_response_id")
        # Both a conversation and a previous response.
        error = expect_error(lambda: client.responses.create(
            input="Hi.", conversation=cid, previous_response_id=first["id"]), 400, "invalid_request")
        assert error["param"] in ("previous_response_id", "conversation"), error
        for bad in ("a b", "x" * 129, "", "a/b"):
            expect_error(lambda: client.responses.create(input="Hi.", extra_body={"conversation": bad}),
                         400, "invalid_request", "conversation")
        expect_error(lambda: client.responses.create(input="Hi.", extra_body={"conversation": {"name": cid}}),
                     400, "invalid_request", "conversation")
    assert list_items(client, cid) == before


def test_bad_http(stack, raw_http, conversation):
    cid, first = conversation
    with nothing_stored(stack):
        for content in (b'{"input": "Hi.", ', b"input=Hi", b"[1, 2]", b'"Hi."'):
            r = raw_http.post("/v1/responses", content=content, headers={"content-type": "application/json"})
            check_error(r, 400, "invalid_request", "body")

        for method, path, allowed in (
            ("PUT", "/v1/responses", "POST"),
            ("GET", "/v1/responses", "POST"),
            ("PATCH", f"/v1/responses/{first['id']}", "GET, DELETE"),
            ("POST", f"/v1/responses/{first['id']}/input_items", "GET"),
            ("GET", f"/v1/responses/{first['id']}/cancel", "POST"),
            ("PUT", f"/v1/conversations/{cid}", "GET, POST, DELETE"),
            ("DELETE", f"/v1/conversations/{cid}/items", "GET, POST"),
        ):
            r = raw_http.request(method, path, json={"input": "Hi."} if method != "GET" else None)
            check_error(r, 405, "method_not_allowed")
            assert r.headers.get("allow") == allowed, (method, path, r.headers)

        for path in ("/v1/responses/resp_unknown", f"/v1/responses/resp_{uuid.uuid4().hex}.{first['id'].split('.')[1]}",
                     "/v1/responses/resp_unknown/input_items"):
            check_error(raw_http.get(path), 404, "response_not_found")
        check_error(raw_http.get("/v1/nothing"), 404)
        check_error(raw_http.get("/v1/responses/a/b/c"), 404)
        check_error(raw_http.get(f"/v1/responses/{first['id']}", params={"stream": "maybe"}),
                    400, "invalid_request", "stream")
        check_error(raw_http.get(f"/v1/responses/{first['id']}", params={"stream": "true", "starting_after": "x"}),
                    400, "invalid_request", "starting_after")


# ---------------------------------------------------------------------------------------------
# The model failing: an error, and nothing stored


def test_model_failure(client, stack, conversation):
    cid, _ = conversation
    before = list_items(client, cid)
    stack.script({"garbage": True})
    with no_run_stored(stack):
        error = expect_error(lambda: client.responses.create(input="Hello my name is Zed.", conversation=cid),
                             502, "model_error")
    assert error["param"] is None and error["type"] == "model_error", error
    assert list_items(client, cid) == before
    # Without a conversation: no conversation is left behind either.
    stack.script({"garbage": True})
    with no_run_stored(stack):
        expect_error(lambda: client.responses.create(input="Hello my name is Zed."), 502, "model_error")
    # The next one is answered.
    _, parsed, _ = create(client, input="What is my name?", conversation=cid)
    assert parsed.output_text == "Your name is Collin."


@pytest.mark.parametrize("step", [{"error_after": 3}, {"garbage": True}, {"cut_after": 3}],
                         ids=["error mid-stream", "garbage", "cut mid-stream"])
def test_model_failure_streamed(client, stack, raw_http, conversation, step):
    cid, _ = conversation
    before = list_items(client, cid)
    stack.script(step)
    with no_run_stored(stack):
        events, _ = read_sse(raw_http, "POST", "/v1/responses",
                             json={"input": "Hello my name is Zed.", "conversation": cid, "stream": True})
    types = [e["type"] for e in events]
    assert types[-1] == "response.failed", types
    # The message item opens with the reply's first piece: a failure before it has none.
    assert shape(types[:-1]) in (STREAM_SHAPE[:2], STREAM_SHAPE[:5]), types
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["usage"] is None
    assert failed["error"]["code"] and failed["error"]["message"], failed
    assert failed["id"] == events[0]["response"]["id"]
    assert list_items(client, cid) == before
    # The failed response is either not found or kept as failed, with its error, read alike
    # whole and as events.
    r = raw_http.get(f"/v1/responses/{failed['id']}")
    if r.status_code == 404:
        check_error(r, 404, "response_not_found")
        check_error(raw_http.get(f"/v1/responses/{failed['id']}", params={"stream": "true"}),
                    404, "response_not_found")
    else:
        assert r.status_code == 200, r.text
        kept = r.json()
        schema.validate(kept, "ResponseResource")
        assert (kept["status"], kept["output"], kept["error"]) == ("failed", [], failed["error"]), kept
        replay, _ = read_sse(raw_http, "GET", f"/v1/responses/{failed['id']}", params={"stream": "true"})
        assert replay[-1]["type"] == "response.failed", replay
        assert replay[-1]["response"]["error"] == failed["error"]
    _, parsed, _ = create(client, input="What is my name?", conversation=cid)
    assert parsed.output_text == "Your name is Collin."
