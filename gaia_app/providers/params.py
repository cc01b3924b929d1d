"""Every Chat Completions parameter, and what each kind of provider does with it: one table.

A parameter is *forwarded* (sent as the client sent it), *translated* (the adapter maps it to
its own API) or, where the table has no entry, *refused*: a 400 that names the parameter and
the provider. Nothing is dropped without a word, unless the deployment
(`GAIA_DROP_UNSUPPORTED_PARAMS=1`) or the request (`X-Gaia-Drop-Params: true`) asks for it,
and then the response names what was dropped (`X-Gaia-Dropped-Params`).

Fields Gaia does not know go through unchanged to OpenAI-kind providers and Anthropic (that
is how vendor options travel: `extra_body` in the SDKs) and the provider decides; `local`,
which has no vendor options, refuses them.

Some entries are features of the messages rather than fields (`image_url` and `input_audio`
content parts, tool messages): `features_of` finds them, and the table decides them the same
way. The README's parameter table is this one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FORWARD = "forward"
TRANSLATE = "translate"
# `local` is deterministic: sampling parameters are accepted and change nothing, as they would
# on a model with one possible answer.
NO_EFFECT = "no effect"

# Handled by Gaia itself for every provider (checked, then given to each adapter).
CORE = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature",
})

# Every parameter Gaia knows beyond the core, in the order the README lists them.
KNOWN = (
    # sampling
    "top_p", "frequency_penalty", "presence_penalty", "seed", "stop", "logit_bias", "n",
    "logprobs", "top_logprobs",
    # tools and output shape
    "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "response_format",
    # content parts, and a message's `name` (features of the messages)
    "image_url", "input_audio", "file", "name",
    # who is asking, and how the provider should keep or bill it
    "user", "safety_identifier", "prompt_cache_key", "metadata", "store", "service_tier",
    # model behaviour and other outputs
    "reasoning_effort", "verbosity", "modalities", "audio", "prediction", "web_search_options",
)

# What each kind takes; a parameter a kind does not list is refused for it.
OPENAI_TAKES: Mapping[str, str] = {name: FORWARD for name in KNOWN}

ANTHROPIC_TAKES: Mapping[str, str] = {
    "top_p": TRANSLATE,
    "stop": TRANSLATE,  # stop_sequences
    "tools": TRANSLATE,  # tools with input_schema; tool turns as tool_use / tool_result blocks
    "tool_choice": TRANSLATE,
    "parallel_tool_calls": TRANSLATE,  # tool_choice.disable_parallel_tool_use
    "functions": TRANSLATE,
    "function_call": TRANSLATE,
    "response_format": TRANSLATE,  # a forced tool whose input is the answer
    "image_url": TRANSLATE,  # image blocks
    "user": TRANSLATE,  # metadata.user_id
}

LOCAL_TAKES: Mapping[str, str] = {
    "top_p": NO_EFFECT,
    "frequency_penalty": NO_EFFECT,
    "presence_penalty": NO_EFFECT,
    "seed": TRANSLATE,
    "stop": TRANSLATE,
    "n": TRANSLATE,
    # Answered by rule: tools called by the words they share with the message, JSON made
    # valid for the schema (`providers.local_tools`).
    "tools": TRANSLATE,
    "tool_choice": TRANSLATE,
    "parallel_tool_calls": TRANSLATE,
    "functions": TRANSLATE,
    "function_call": TRANSLATE,
    "response_format": TRANSLATE,
    "name": NO_EFFECT,
    "user": NO_EFFECT,
    "safety_identifier": NO_EFFECT,
    "prompt_cache_key": NO_EFFECT,
    "metadata": NO_EFFECT,
    "store": NO_EFFECT,
}

_TAKES = {"openai": OPENAI_TAKES, "anthropic": ANTHROPIC_TAKES, "local": LOCAL_TAKES}

# The table: parameter -> {kind: how}.
PARAMETERS: Mapping[str, Mapping[str, str]] = {
    name: {kind: takes[name] for kind, takes in _TAKES.items() if name in takes} for name in KNOWN
}

# Kinds that receive fields Gaia does not know.
_UNKNOWN_GOES_TO = frozenset({"openai", "anthropic"})


def handling(name: str, kind: str) -> str | None:
    """What `kind` does with parameter `name`: FORWARD, TRANSLATE, NO_EFFECT or None."""
    if name in CORE:
        return TRANSLATE
    known = PARAMETERS.get(name)
    if known is None:
        return FORWARD if kind in _UNKNOWN_GOES_TO else None
    return known.get(kind)


def features_of(messages: Iterable[Mapping[str, Any]]) -> set[str]:
    """The table entries the messages use beyond text: content part kinds, tool turns."""
    found: set[str] = set()
    for message in messages:
        if message.get("role") in ("tool", "function") or message.get("tool_calls") or message.get("function_call"):
            found.add("tools")
        if message.get("name") is not None and message.get("role") not in ("function", "tool"):
            found.add("name")  # (a tool or function result's name only repeats the function)
        content = message.get("content")
        if isinstance(content, list):
            found.update(kind for kind in (part.get("type") for part in content if isinstance(part, Mapping))
                         if isinstance(kind, str) and kind in PARAMETERS)
    return found


def refused(used: Iterable[str], kind: str) -> list[str]:
    """The parameters (and features) among `used` that `kind` cannot take, in order."""
    return [name for name in used if handling(name, kind) is None]
