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

_OPENAI_ONLY = {"openai": FORWARD}
_EVERYWHERE_SAMPLING = {"openai": FORWARD, "local": NO_EFFECT}

PARAMETERS: Mapping[str, Mapping[str, str]] = {
    # sampling
    "top_p": {"openai": FORWARD, "anthropic": TRANSLATE, "local": NO_EFFECT},
    "frequency_penalty": _EVERYWHERE_SAMPLING,
    "presence_penalty": _EVERYWHERE_SAMPLING,
    "seed": {"openai": FORWARD, "local": TRANSLATE},
    "stop": {"openai": FORWARD, "anthropic": TRANSLATE, "local": TRANSLATE},
    "logit_bias": _OPENAI_ONLY,
    "n": {"openai": FORWARD, "local": TRANSLATE},
    "logprobs": _OPENAI_ONLY,
    "top_logprobs": _OPENAI_ONLY,
    # tools and output shape
    "tools": _OPENAI_ONLY,
    "tool_choice": _OPENAI_ONLY,
    "parallel_tool_calls": _OPENAI_ONLY,
    "functions": _OPENAI_ONLY,
    "function_call": _OPENAI_ONLY,
    "response_format": _OPENAI_ONLY,
    # content parts (features of the messages)
    "image_url": _OPENAI_ONLY,
    "input_audio": _OPENAI_ONLY,
    "file": _OPENAI_ONLY,
    # a message's `name` (who, among several users or assistants, said it)
    "name": {"openai": FORWARD, "local": NO_EFFECT},
    # who is asking, and how the provider should keep or bill it
    "user": {"openai": FORWARD, "anthropic": TRANSLATE, "local": NO_EFFECT},
    "safety_identifier": {"openai": FORWARD, "local": NO_EFFECT},
    "prompt_cache_key": {"openai": FORWARD, "local": NO_EFFECT},
    "metadata": {"openai": FORWARD, "local": NO_EFFECT},
    "store": {"openai": FORWARD, "local": NO_EFFECT},
    "service_tier": _OPENAI_ONLY,
    # model behaviour and other outputs
    "reasoning_effort": _OPENAI_ONLY,
    "verbosity": _OPENAI_ONLY,
    "modalities": _OPENAI_ONLY,
    "audio": _OPENAI_ONLY,
    "prediction": _OPENAI_ONLY,
    "web_search_options": _OPENAI_ONLY,
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
        if message.get("name") is not None:
            found.add("name")
        content = message.get("content")
        if isinstance(content, list):
            found.update(part.get("type") for part in content if part.get("type") in PARAMETERS)
    return found


def refused(used: Iterable[str], kind: str) -> list[str]:
    """The parameters (and features) among `used` that `kind` cannot take, in order."""
    return [name for name in used if handling(name, kind) is None]
