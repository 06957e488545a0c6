"""Validates JSON values against the vendored Open Responses OpenAPI document.

The document is tests/fixtures/openresponses/openapi.json (see the README there for where it
came from). It is OpenAPI 3.1, so its component schemas are JSON Schema 2020-12: they are
checked with `jsonschema`'s Draft202012Validator, and `$ref`s such as
`#/components/schemas/Usage` resolve inside the document through a `referencing` registry.
OpenAPI-only keywords (`discriminator`, `example`, `x-...`) are ignored by the validator; the
`oneOf`s they sit on are told apart by each variant's `type` enum anyway. None of the schemas
sets `additionalProperties: false`, so extra fields pass.

    from schema import validate, validate_event, validate_error_body
    validate(body, "ResponseResource")           # raises SchemaViolation, listing every error
    validate_event({"type": "response.output_text.delta", ...})
    validate_error_body({"error": {"type": ..., "code": ..., "message": ..., "param": ...}})
    events = validate_sse(text)                  # a whole text/event-stream body

Run as a script for a self-check: `.venv/bin/python tests/responses/schema.py`.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Iterable

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "openresponses" / "openapi.json"
DOC_URI = "urn:openresponses:openapi.json"
SCHEMAS = "#/components/schemas/"

# The HTTP error body. The document has no schema for it (its paths declare only 200s); the
# specification's "Errors" section shows {"error": {"message", "type", "param", "code"}}, the
# fields of ErrorPayload (the payload of the streaming `error` event).
ERROR_BODY_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"$ref": DOC_URI + SCHEMAS + "ErrorPayload"}},
}


class SchemaViolation(AssertionError):
    """A value that does not match its schema; `errors` holds one line per violation."""

    def __init__(self, schema_name: str, errors: list[str]):
        self.schema_name = schema_name
        self.errors = errors
        super().__init__(f"not a valid {schema_name}:\n  " + "\n  ".join(errors))


def _nullable_to_31(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema (3.1 documents have none of it)."""
    if isinstance(node, list):
        return [_nullable_to_31(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_to_31(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


@functools.lru_cache(maxsize=None)
def spec() -> dict:
    """The OpenAPI document (3.0 `nullable` rewritten as JSON Schema, if any)."""
    doc = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    if str(doc.get("openapi", "")).startswith("3.0"):
        doc = _nullable_to_31(doc)
    return doc


@functools.lru_cache(maxsize=None)
def _registry() -> Registry:
    return Registry().with_resource(DOC_URI, Resource(contents=spec(), specification=DRAFT202012))


def schema_names() -> list[str]:
    """Every name under #/components/schemas."""
    return sorted(spec()["components"]["schemas"])


@functools.lru_cache(maxsize=None)
def _validator_for(schema_name: str) -> jsonschema.Draft202012Validator:
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"no component schema {schema_name!r}; see schema_names()")
    return _validator({"$ref": DOC_URI + SCHEMAS + schema_name})


def _validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _describe(error: jsonschema.ValidationError) -> list[str]:
    """One line per leaf violation; a oneOf/anyOf failure lists what each branch wanted."""
    where = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
    if error.context:
        # A oneOf/anyOf that no branch accepted. The branches meant for this value are those
        # that fail neither on its JSON type nor on its `type` field (the discriminator): the
        # `null` branch of a nullable field and the other item kinds of a union drop out.
        branches: dict[Any, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)

        def wrong_kind(subs: list[jsonschema.ValidationError]) -> bool:
            return any((not s.path and s.validator == "type")
                       or (list(s.path) == ["type"] and s.validator in ("enum", "const"))
                       for s in subs)

        meant = [subs for subs in branches.values() if not wrong_kind(subs)]
        if len(meant) == 1:
            return [line for sub in meant[0] for line in _describe(sub)]
        if not meant:
            kinds = (error.instance.get("type") if isinstance(error.instance, dict) else None)
            what = f"type {kinds!r}" if kinds is not None else f"JSON {type(error.instance).__name__}"
            return [f"{where}: no {error.validator} branch takes a value of {what}"]
        best = jsonschema.exceptions.best_match(error.context)
        return [f"{where}: {error.validator} failed; closest branch: {line}" for line in _describe(best)]
    return [f"{where}: {error.message}"]


def errors(value: Any, schema_name: str) -> list[str]:
    """The violations of `value` against #/components/schemas/<schema_name> ([] when valid)."""
    return _errors(_validator_for(schema_name), value)


def _errors(validator: jsonschema.Draft202012Validator, value: Any) -> list[str]:
    found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return [line for e in found for line in _describe(e)]


def is_valid(value: Any, schema_name: str) -> bool:
    return _validator_for(schema_name).is_valid(value)


def validate(value: Any, schema_name: str) -> None:
    """Raise SchemaViolation unless `value` matches #/components/schemas/<schema_name>."""
    found = errors(value, schema_name)
    if found:
        raise SchemaViolation(schema_name, found)


@functools.lru_cache(maxsize=None)
def event_schemas() -> dict[str, str]:
    """Streaming event `type` -> component schema name, from the text/event-stream `oneOf` of
    POST /responses (the events the specification defines)."""
    post = spec()["paths"]["/responses"]["post"]
    variants = post["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    out = {}
    for variant in variants:
        name = variant["$ref"].removeprefix(SCHEMAS)
        (event_type,) = spec()["components"]["schemas"][name]["properties"]["type"]["enum"]
        out[event_type] = name
    return out


def event_schema_name(event_type: str) -> str:
    """The component schema for a streaming event type, e.g.
    "response.output_text.delta" -> "ResponseOutputTextDeltaStreamingEvent"."""
    try:
        return event_schemas()[event_type]
    except KeyError:
        raise KeyError(f"the specification defines no streaming event {event_type!r}") from None


def validate_event(event: Any) -> str:
    """Validate one streaming event (a parsed `data:` object) against the schema its `type`
    names; returns that schema's name."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise SchemaViolation("streaming event", [f"$: no string `type` in {event!r}"])
    try:
        name = event_schema_name(event["type"])
    except KeyError as e:
        raise SchemaViolation("streaming event", [f"$['type']: {e.args[0]}"]) from None
    validate(event, name)
    return name


def validate_error_body(body: Any) -> None:
    """Validate a non-2xx JSON body: {"error": ErrorPayload}, i.e. `type` (string), `code`
    (string or null), `message` (string), `param` (string or null), all four required."""
    found = _errors(_error_body_validator(), body)
    if found:
        raise SchemaViolation("error body ({'error': ErrorPayload})", found)


@functools.lru_cache(maxsize=None)
def _error_body_validator() -> jsonschema.Draft202012Validator:
    return _validator(ERROR_BODY_SCHEMA)


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event field, data) for each event of a text/event-stream body (multi-line `data:` is
    joined with newlines; comments and other fields are dropped)."""
    out: list[tuple[str | None, str]] = []
    event: str | None = None
    data: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") + [""]:
        if line == "":
            if data:
                out.append((event, "\n".join(data)))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, val = line.partition(":")
        val = val.removeprefix(" ")
        if field == "event":
            event = val
        elif field == "data":
            data.append(val)
    return out


def validate_sse(text: str | Iterable[tuple[str | None, str]]) -> list[dict]:
    """Check a whole streaming body against the specification's rules: every `data` but the
    last is a JSON event valid for its `type`, the `event:` field (when present) equals that
    `type`, `sequence_number`s increase strictly, and the terminal data is the literal `[DONE]`.
    Returns the parsed events (without `[DONE]`)."""
    frames = parse_sse(text) if isinstance(text, str) else list(text)
    problems: list[str] = []
    events: list[dict] = []
    if not frames or frames[-1][1] != "[DONE]":
        problems.append("the terminal data is not the literal [DONE]")
    last_seq = None
    for i, (field, data) in enumerate(frames):
        if data == "[DONE]":
            if i != len(frames) - 1:
                problems.append(f"event {i}: [DONE] before the end")
            continue
        try:
            event = json.loads(data)
        except ValueError as e:
            problems.append(f"event {i}: data is not JSON ({e}): {data[:80]!r}")
            continue
        events.append(event)
        kind = event.get("type") if isinstance(event, dict) else None
        if field is not None and field != kind:
            problems.append(f"event {i}: `event: {field}` but type {kind!r}")
        try:
            validate_event(event)
        except SchemaViolation as e:
            problems.extend(f"event {i} ({kind}): {line}" for line in e.errors)
        seq = event.get("sequence_number") if isinstance(event, dict) else None
        if isinstance(seq, int) and last_seq is not None and seq <= last_seq:
            problems.append(f"event {i}: sequence_number {seq} after {last_seq}")
        if isinstance(seq, int):
            last_seq = seq
    if problems:
        raise SchemaViolation("text/event-stream body", problems)
    return events


def _self_check() -> None:
    usage = {
        "input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
    }
    message = {
        "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
    }
    response = {
        "id": "resp_1", "object": "response", "created_at": 1765000000, "completed_at": 1765000001,
        "status": "completed", "incomplete_details": None, "model": "m", "previous_response_id": None,
        "instructions": None, "output": [message], "error": None, "tools": [], "tool_choice": "auto",
        "truncation": "disabled", "parallel_tool_calls": False, "text": {"format": {"type": "text"}},
        "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_logprobs": 0,
        "temperature": 1.0, "reasoning": None, "usage": usage, "max_output_tokens": None,
        "max_tool_calls": None, "store": True, "background": False, "service_tier": "default",
        "metadata": {}, "safety_identifier": None, "prompt_cache_key": None,
    }
    validate(response, "ResponseResource")
    validate(message, "Message")
    validate({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f",
              "arguments": "{}", "status": "completed"}, "FunctionCall")
    bad = {k: v for k, v in response.items() if k != "usage"} | {"object": "resp", "output": [dict(message, status="done")]}
    found = errors(bad, "ResponseResource")
    assert any("'usage' is a required property" in e for e in found), found
    assert any("['object']" in e for e in found), found
    assert any("['output'][0]" in e for e in found), found
    # The document's own ResponseResource example leaves out required fields.
    assert errors(spec()["components"]["schemas"]["ResponseResource"]["example"], "ResponseResource")

    delta = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "delta": "Hi"}
    assert validate_event(delta) == "ResponseOutputTextDeltaStreamingEvent"
    try:
        validate_event({k: v for k, v in delta.items() if k != "content_index"})
        raise AssertionError("a delta without content_index passed")
    except SchemaViolation as e:
        assert "'content_index' is a required property" in str(e), e
    try:
        validate_event({"type": "response.output_text.deltas", "sequence_number": 1})
        raise AssertionError("an unknown event type passed")
    except SchemaViolation:
        pass
    assert len(event_schemas()) == 24, event_schemas()

    validate_error_body({"error": {"type": "invalid_request", "code": None, "message": "bad", "param": "model"}})
    assert not _error_body_validator().is_valid({"error": {"code": "x", "message": "bad"}})

    created = {"type": "response.created", "sequence_number": 0,
               "response": response | {"status": "in_progress", "completed_at": None, "output": [], "usage": None}}
    stream = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in (created, delta)) + "data: [DONE]\n\n"
    assert len(validate_sse(stream)) == 2
    try:
        validate_sse(stream.replace("event: response.output_text.delta", "event: delta").replace("data: [DONE]\n\n", ""))
        raise AssertionError("a bad stream passed")
    except SchemaViolation as e:
        assert len(e.errors) == 2, e.errors

    # 3.0 `nullable`, for a document of that version.
    assert _nullable_to_31({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert _nullable_to_31({"$ref": "#/x", "nullable": True}) == {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}
    print(f"ok: {SPEC_PATH.name} (OpenAPI {spec()['openapi']}, {spec()['info']['version']}), "
          f"{len(schema_names())} component schemas, {len(event_schemas())} streaming event types")


if __name__ == "__main__":
    _self_check()
