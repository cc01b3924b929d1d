"""A Chat Completions request in the Messages API's terms, for Anthropic.

System messages are lifted out and turns alternate from a user turn. From the messages as a
/v1 client sent them (`ChatRequest.wire_messages`): text parts stay separate text blocks,
`image_url` parts become image blocks, an assistant's `tool_calls` become `tool_use` blocks and
`tool` results `tool_result` blocks in the user turn that follows. `tools`, `functions`,
`tool_choice`, `function_call` and `parallel_tool_calls` map to Anthropic's tools and
`tool_choice`; `response_format` (a JSON schema, or any JSON object) is asked for with a tool
the model is made to call, whose input is the answer.

What cannot be said in Anthropic's terms (tool arguments that are not a JSON object, an image
type it does not read) raises `Untranslatable`, naming the field, before anything is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gaia_app.providers.base import ChatRequest

# Image types the Messages API reads.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The tool standing for `response_format: {"type": "json_object"}`.
JSON_OBJECT_TOOL = "json_object"
# Parameters this module turns into tools and tool_choice (the others: `_with_options`).
TOOL_PARAMETERS = frozenset({
    "tools", "functions", "tool_choice", "function_call", "parallel_tool_calls", "response_format",
})
OPENING_TURN = "(The conversation so far.)"
_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
_DATA_URL = re.compile(r"data:([a-z0-9.+/-]+);base64,(.*)", re.S | re.I)


class Untranslatable(ValueError):
    """Part of the request has no form in the Messages API; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass(frozen=True)
class MessagesRequest:
    """A Messages API body, and how to read its answer back in OpenAI's terms."""

    body: dict
    # The forced tool whose input is the answer (`response_format`), if any.
    answer_tool: str | None = None
    # The client declared `functions` (not `tools`): a call comes back as `function_call`.
    legacy_functions: bool = False


def messages_request(request: ChatRequest, max_tokens: int) -> MessagesRequest:
    if request.wire_messages is not None:
        system, turns = _wire_turns(request.wire_messages, request.prepended)
    else:
        system, turns = _text_turns(request)
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": OPENING_TURN})
    body: dict = {"model": request.model, "max_tokens": max_tokens, "messages": turns}
    if system:
        body["system"] = system
    if request.temperature is not None:
        # Anthropic's range is 0-1; OpenAI's is 0-2.
        body["temperature"] = min(request.temperature, 1.0)
    answer_tool = _add_tools(body, request.options)
    legacy = bool(request.options.get("functions")) and not request.options.get("tools")
    return MessagesRequest(_with_options(body, request.options), answer_tool, legacy)


def _with_options(body: dict, options: Mapping[str, Any]) -> dict:
    """The Chat Completions parameters `providers.params` lets through, in the Messages API's
    terms; fields Gaia does not know (vendor options such as `top_k`) go as they are."""
    for name, value in options.items():
        if name in TOOL_PARAMETERS:
            continue
        if name == "top_p":
            body["top_p"] = value
        elif name == "stop":
            body["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif name == "user":
            body.setdefault("metadata", {})["user_id"] = value
        else:
            body[name] = value
    return body


# -- messages --------------------------------------------------------------------------------


def _text_turns(request: ChatRequest) -> tuple[str, list[dict]]:
    """Text only (Gaia's chat API): consecutive turns of one role joined into one."""
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    turns: list[dict] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + message.content
        else:
            turns.append({"role": role, "content": message.content})
    return system, turns


def _wire_turns(wire, prepended: int = 0) -> tuple[str, list[dict]]:
    """The messages as sent, in content blocks; consecutive turns of one role share a turn.
    Errors name messages as the client counts them (not the `prepended` ones Gaia added)."""
    system: list[str] = []
    turns: list[dict] = []
    # Legacy function calls have no id: the one made up for each, by function name.
    function_ids: dict[str, str] = {}
    for index, message in enumerate(wire, start=-prepended):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_plain_text(message.get("content")))
            continue
        if role == "assistant":
            role, blocks = "assistant", _assistant_blocks(message, index, function_ids)
        elif role in ("tool", "function"):
            role, blocks = "user", [_tool_result(message, index, function_ids)]
        else:
            role, blocks = "user", _user_blocks(message.get("content"), f"messages[{index}].content")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(text for text in system if text), [_finished(turn) for turn in turns]


def _finished(turn: dict) -> dict:
    """Tool results first in a user turn (the API requires it), no empty text, and a turn of
    one text block as a plain string."""
    blocks = [b for b in turn["content"] if b["type"] != "text" or b["text"]]
    blocks.sort(key=lambda block: block["type"] != "tool_result")
    if not blocks:
        return {"role": turn["role"], "content": ""}
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return {"role": turn["role"], "content": blocks}


def _plain_text(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, Mapping))
    return content or ""


def _text_blocks(content) -> list[dict]:
    """A string, or text (and refusal) parts, as text blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{"type": "text", "text": part.get("text") or part.get("refusal") or ""}
            for part in content or () if isinstance(part, Mapping)]


def _user_blocks(content, where: str) -> list[dict]:
    if not isinstance(content, list):
        return _text_blocks(content)
    blocks = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            blocks.append(_image(part["image_url"]["url"], f"{where}[{index}].image_url.url"))
        else:
            raise Untranslatable(f"{where}[{index}]", f"{where}[{index}]: Anthropic cannot read {kind!r} parts.")
    return blocks


def _image(url: str, where: str) -> dict:
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    found = _DATA_URL.fullmatch(url)
    media_type = found.group(1).lower() if found else None
    if media_type not in IMAGE_TYPES:
        raise Untranslatable(where, f"{where}: Anthropic reads images of type "
                                    f"{', '.join(sorted(IMAGE_TYPES))}; this one is {media_type or 'unknown'}.")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": found.group(2)}}


def _arguments(arguments, where: str) -> dict:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise Untranslatable(where, f"{where} must be a JSON object (a tool call's arguments).")
    return value


def _assistant_blocks(message: Mapping, index: int, function_ids: dict[str, str]) -> list[dict]:
    blocks = _text_blocks(message.get("content"))
    for position, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        where = f"messages[{index}].tool_calls[{position}].function.arguments"
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": _arguments(function.get("arguments"), where)})
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        call_id = function_ids[legacy.get("name")] = f"call_function_{index}"
        where = f"messages[{index}].function_call.arguments"
        blocks.append({"type": "tool_use", "id": call_id, "name": legacy.get("name"),
                       "input": _arguments(legacy.get("arguments"), where)})
    return blocks


def _tool_result(message: Mapping, index: int, function_ids: dict[str, str]) -> dict:
    if message.get("role") == "tool":
        call_id = message.get("tool_call_id")
    else:
        call_id = function_ids.get(message.get("name"))
        if call_id is None:
            raise Untranslatable(f"messages[{index}].name", f"messages[{index}] answers no earlier "
                                                             "function_call of that name.")
    content = message.get("content")
    result = content if isinstance(content, str) else _text_blocks(content)
    return {"type": "tool_result", "tool_use_id": call_id, "content": result}


# -- tools -----------------------------------------------------------------------------------


def _declared_tools(options: Mapping[str, Any]) -> list[dict]:
    functions = [tool["function"] for tool in options.get("tools") or ()]
    functions += list(options.get("functions") or ())
    tools = []
    for function in functions:
        tool: dict = {"name": function["name"]}
        if function.get("description"):
            tool["description"] = function["description"]
        tool["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        tools.append(tool)
    return tools


def _tool_choice(options: Mapping[str, Any]) -> dict | None:
    choice = options.get("tool_choice", options.get("function_call"))
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise Untranslatable("tool_choice", f"'tool_choice' {choice!r} has no form in Anthropic's tools.")
        return {"type": _CHOICES[choice]}
    named = choice.get("function", choice)
    return {"type": "tool", "name": named["name"]}


def _answer_tool(options: Mapping[str, Any], names: set[str]) -> dict | None:
    """The tool that stands for `response_format` (a JSON schema, or any JSON object)."""
    shape = options.get("response_format")
    kind = shape.get("type") if isinstance(shape, Mapping) else None
    if kind == "json_schema":
        spec = shape["json_schema"]
        name, schema = spec["name"], spec.get("schema") or {"type": "object"}
        description = spec.get("description") or f"Give the answer as {name}."
    elif kind == "json_object":
        name, schema, description = JSON_OBJECT_TOOL, {"type": "object"}, "Give the answer as a JSON object."
    else:
        return None
    if name in names:
        raise Untranslatable("response_format.json_schema.name",
                             f"The response format's name {name!r} is also a tool's; rename one of them.")
    return {"name": name, "description": description, "input_schema": schema}


def _add_tools(body: dict, options: Mapping[str, Any]) -> str | None:
    """Tools and tool_choice in Anthropic's terms; returns the answer tool's name, if any."""
    tools = _declared_tools(options)
    choice = _tool_choice(options)
    answer = _answer_tool(options, {tool["name"] for tool in tools})
    if answer is not None:
        if not tools or (choice is not None and choice["type"] == "none"):
            choice = {"type": "tool", "name": answer["name"]}
        elif choice is None or choice["type"] == "auto":
            # Some tool, the answer's or one of the client's: never plain text.
            choice = {"type": "any"}
        tools.append(answer)
    if not tools:
        return None
    one_call = options.get("parallel_tool_calls") is False or (
        bool(options.get("functions")) and not options.get("tools"))
    if one_call or (answer is not None and len(tools) == 1):
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    return answer["name"] if answer else None
