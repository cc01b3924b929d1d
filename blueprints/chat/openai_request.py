"""Reading a Chat Completions request as OpenAI defines it: messages in every shape a client
sends (content parts, tool calls and tool results), tools, output formats and sampling
parameters, each checked with a 400 that names the field. What passes is kept as it came,
so an OpenAI-kind provider sees what the client sent.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from gaia_app import json_body
from gaia_app.errors import APIError, InvalidField, InvalidRequest
from gaia_app.providers.base import ChatMessage
from gaia_app.providers.json_values import schema_problem
from gaia_app.schemas import text_problem

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool", "function": "tool"}
USER_PARTS = frozenset({"text", "image_url", "input_audio", "file"})
ASSISTANT_PARTS = frozenset({"text", "refusal"})
MAX_PARTS = 64
MAX_TOOLS = 128
MAX_DATA_URL_BYTES = 20 * 1024 * 1024
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
AUDIO_FORMATS = frozenset({"wav", "mp3"})
# Schemas whose metaschema check is remembered (per process), and the largest one remembered.
SCHEMA_CACHE_SIZE = 1024
MAX_CACHED_SCHEMA_CHARS = 64 * 1024


def read_body() -> dict:
    """The JSON object of the request, read the one way every body is (`json_body`)."""
    if not request.is_json:
        raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")
    try:
        body = json_body.loads(json_body.request_body(request), openai_paths=True)
    except json.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def invalid(message: str, param: str | None = None) -> APIError:
    return InvalidField(param, message) if param else InvalidRequest(message)


def _text(value: Any, param: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise invalid(f"{param} must be a string.", param)
    problem = text_problem(value)
    if problem:
        raise invalid(f"{param}: {problem}", param)
    if len(value) > max_chars:
        raise invalid(f"{param} is longer than {max_chars} characters.", param)
    return value


def _image(part: Mapping, param: str) -> None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else None
    if not isinstance(url, str):
        raise invalid(f"{param}.image_url.url is required.", f"{param}.image_url.url")
    if url.startswith("data:"):
        if not re.match(r"data:image/[a-z0-9.+-]+;base64,", url):
            raise invalid(f"{param}.image_url.url: a data URL must be data:image/<type>;base64,...",
                          f"{param}.image_url.url")
        if len(url) > MAX_DATA_URL_BYTES:
            raise invalid(f"{param}.image_url.url: an image may be at most {MAX_DATA_URL_BYTES} bytes.",
                          f"{param}.image_url.url")
    elif not url.startswith("https://") or len(url) > 4096:
        raise invalid(f"{param}.image_url.url must be an https:// URL or a data: URL.", f"{param}.image_url.url")
    detail = image.get("detail")
    if detail is not None and detail not in ("auto", "low", "high"):
        raise invalid(f"{param}.image_url.detail must be auto, low or high.", f"{param}.image_url.detail")


def _audio(part: Mapping, param: str) -> None:
    audio = part.get("input_audio")
    if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str) \
            or not isinstance(audio.get("format"), str) or audio["format"] not in AUDIO_FORMATS:
        raise invalid(f"{param}.input_audio needs data (base64) and format (wav or mp3).", f"{param}.input_audio")


def _parts(content: list, role: str, param: str, max_chars: int) -> str:
    """Checks content parts; returns their text."""
    allowed = ASSISTANT_PARTS if role == "assistant" else USER_PARTS if role == "user" else {"text"}
    if not content or len(content) > MAX_PARTS:
        raise invalid(f"{param} must have 1 to {MAX_PARTS} parts.", param)
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if not isinstance(kind, str) or kind not in allowed:
            raise invalid(f"{where}: a {role} message takes parts of type {', '.join(sorted(allowed))}.", where)
        if kind in ("text", "refusal"):
            texts.append(_text(part.get(kind), f"{where}.{kind}", max_chars))
        elif kind == "image_url":
            _image(part, where)
        elif kind == "input_audio":
            _audio(part, where)
        elif not isinstance(part.get("file"), Mapping):
            raise invalid(f"{where}.file must be an object (file_id, or file_data and filename).", where)
    text = "".join(texts)
    if len(text) > max_chars:
        raise invalid(f"{param} is longer than {max_chars} characters.", param)
    return text


def _tool_calls(calls: Any, param: str, max_chars: int) -> tuple[list[str], str]:
    """An assistant's tool calls: their ids, and their text (for counting tokens)."""
    if not isinstance(calls, list) or not calls or len(calls) > MAX_TOOLS:
        raise invalid(f"{param} must be a non-empty array of tool calls.", param)
    ids, texts = [], []
    for index, call in enumerate(calls):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if (not isinstance(call.get("id") if isinstance(call, Mapping) else None, str)
                or call.get("type", "function") != "function" or not isinstance(function, Mapping)):
            raise invalid(f"{where} needs an id, type function and a function.", where)
        if not isinstance(function.get("name"), str) or not TOOL_NAME.fullmatch(function["name"]):
            raise invalid(f"{where}.function.name must be 1-64 letters, digits, _ or -.", f"{where}.function.name")
        texts.append(function["name"] + _text(function.get("arguments"), f"{where}.function.arguments", max_chars))
        ids.append(call["id"])
    return ids, " ".join(texts)


def read_messages(raw: Any, max_messages: int, max_chars: int) -> tuple[tuple[dict, ...], list[ChatMessage]]:
    """The messages as sent (checked), and their text for counting, storing and adapters
    that take text only."""
    if not isinstance(raw, list) or not raw:
        raise invalid("'messages' must be a non-empty array.", "messages")
    if len(raw) > max_messages:
        raise invalid(f"'messages' has {len(raw)} entries; at most {max_messages} are allowed.", "messages")
    texts: list[ChatMessage] = []
    call_ids: set[str] = set()
    for index, message in enumerate(raw):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, Mapping) else None
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(f"{param} needs a role: system, developer, user, assistant or tool.", param)
        text = _message_text(message, role, param, max_chars, call_ids)
        texts.append(ChatMessage(ROLES[role], text))
    if not any(m.role == "user" for m in texts):
        raise invalid("'messages' needs at least one user message.", "messages")
    return tuple(raw), texts


def _message_text(message: Mapping, role: str, param: str, max_chars: int, call_ids: set[str]) -> str:
    name = message.get("name")
    if name is not None and (not isinstance(name, str) or not TOOL_NAME.fullmatch(name)):
        raise invalid(f"{param}.name must be 1-64 letters, digits, _ or -.", f"{param}.name")
    content = message.get("content")
    calls_text = ""
    if role == "assistant" and message.get("tool_calls") is not None:
        ids, calls_text = _tool_calls(message["tool_calls"], f"{param}.tool_calls", max_chars)
        call_ids.update(ids)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or call_id not in call_ids:
            raise invalid(f"{param}.tool_call_id must name a tool call of an earlier assistant message.",
                          f"{param}.tool_call_id")
    if content in (None, []) and role == "assistant" and (calls_text or message.get("function_call")):
        # (Some clients, instructor among them, send an empty part list for "no text".)
        return calls_text
    if isinstance(content, list):
        return (_parts(content, role, f"{param}.content", max_chars) + " " + calls_text).strip()
    if not isinstance(content, str):
        raise invalid(f"{param}.content must be a string or an array of content parts.", f"{param}.content")
    return (_text(content, f"{param}.content", max_chars) + " " + calls_text).strip()


# -- tools and output formats --------------------------------------------------------------


@functools.lru_cache(maxsize=SCHEMA_CACHE_SIZE)
def _schema_is_valid(text: str) -> bool:
    """Whether the JSON Schema written as `text` (canonical JSON) passes its metaschema.
    Cached: a client sends the same tools with every request, and a metaschema check costs
    milliseconds where reading the rest of the body costs microseconds."""
    return schema_problem(json.loads(text)) is None


def _schema(value: Any, param: str) -> None:
    """A JSON Schema, checked against its metaschema (the provider would refuse it later)."""
    if not isinstance(value, Mapping):
        raise invalid(f"{param} must be a JSON Schema object.", param)
    if "$schema" in value and not isinstance(value["$schema"], str):
        raise invalid(f"{param}.$schema must be a string (the metaschema's URI).", param)
    # Keys sorted, so that one schema is one entry (1 and 1.0, true and 1 stay apart, as the
    # metaschema tells them apart). Only a valid schema is answered from the cache: a refused
    # one is checked as it came, so the message names the same problem it always did.
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON's types: checked as it is
        text = None
    if text is not None and len(text) <= MAX_CACHED_SCHEMA_CHARS and _schema_is_valid(text):
        return
    problem = schema_problem(value)
    if problem is not None:
        raise invalid(f"{param} is not a valid JSON Schema: {problem}", param)


def _function(function: Any, param: str) -> str:
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) \
            or not TOOL_NAME.fullmatch(function["name"]):
        raise invalid(f"{param}.name must be 1-64 letters, digits, _ or -.", f"{param}.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid(f"{param}.description must be a string.", f"{param}.description")
    if function.get("parameters") is not None:
        _schema(function["parameters"], f"{param}.parameters")
    if function.get("strict") is not None and not isinstance(function["strict"], bool):
        raise invalid(f"{param}.strict must be true or false.", f"{param}.strict")
    return function["name"]


def _tools(body: Mapping) -> set[str]:
    """Checks `tools` and `functions`; returns the names they declare."""
    names: set[str] = set()
    for field, wrapped in (("tools", True), ("functions", False)):
        declared = body.get(field)
        if declared is None:
            continue
        if not isinstance(declared, list) or len(declared) > MAX_TOOLS:
            raise invalid(f"'{field}' must be an array of at most {MAX_TOOLS} entries.", field)
        for index, tool in enumerate(declared):
            where = f"{field}[{index}]"
            if wrapped and (not isinstance(tool, Mapping) or tool.get("type") != "function"):
                raise invalid(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}.", where)
            name = _function(tool.get("function") if wrapped else tool, f"{where}.function" if wrapped else where)
            if name in names:
                raise invalid(f"{where}: the name {name!r} is declared twice.", where)
            names.add(name)
    return names


def _tool_choice(body: Mapping, names: set[str]) -> None:
    for field, modes in (("tool_choice", ("none", "auto", "required")), ("function_call", ("none", "auto"))):
        choice = body.get(field)
        if choice is None or choice in modes:
            continue
        named = choice.get("function", choice) if isinstance(choice, Mapping) else None
        name = named.get("name") if isinstance(named, Mapping) else None
        if not isinstance(name, str):
            raise invalid(f"'{field}' must be one of {', '.join(modes)} or name a function.", field)
        if name not in names:
            raise invalid(f"'{field}' names {name!r}, which is not among the tools.", field)


def _response_format(value: Any) -> None:
    if value is None:
        return
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid("'response_format.type' must be text, json_object or json_schema.", "response_format")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) \
                or not TOOL_NAME.fullmatch(spec["name"]):
            raise invalid("'response_format.json_schema' needs a name (1-64 letters, digits, _ or -).",
                          "response_format.json_schema")
        _schema(spec.get("schema", {}), "response_format.json_schema.schema")
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise invalid("'response_format.json_schema.strict' must be true or false.",
                          "response_format.json_schema.strict")


# -- sampling and the rest -----------------------------------------------------------------


def _number(body: Mapping, name: str, low: float, high: float, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise invalid(f"'{name}' must be {what} from {low:g} to {high:g}.", name)


def _sampling(body: Mapping) -> None:
    _number(body, "top_p", 0, 1)
    _number(body, "frequency_penalty", -2, 2)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "n", 1, 128, integer=True)
    _number(body, "top_logprobs", 0, 20, integer=True)
    _number(body, "seed", -(2**63), 2**63 - 1, integer=True)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and 1 <= len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
        raise invalid("'stop' must be a string or an array of 1 to 4 strings.", "stop")
    bias = body.get("logit_bias")
    if bias is not None and not (isinstance(bias, Mapping) and all(
            str(k).isdigit() and not isinstance(v, bool) and isinstance(v, (int, float)) and -100 <= v <= 100
            for k, v in bias.items())):
        raise invalid("'logit_bias' maps token ids to numbers from -100 to 100.", "logit_bias")
    for name in ("logprobs", "parallel_tool_calls", "store"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise invalid(f"'{name}' must be true or false.", name)
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier", "reasoning_effort", "verbosity"):
        if body.get(name) is not None and (not isinstance(body[name], str) or len(body[name]) > 512):
            raise invalid(f"'{name}' must be a string of at most 512 characters.", name)
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, Mapping) and len(metadata) <= 16 and all(
            isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items())):
        raise invalid("'metadata' holds at most 16 string values (keys up to 64, values up to 512 characters).",
                      "metadata")


def check_parameters(body: Mapping) -> None:
    """Every parameter Gaia knows, in OpenAI's types and ranges (providers decide the rest)."""
    _tool_choice(body, _tools(body))
    _response_format(body.get("response_format"))
    _sampling(body)
