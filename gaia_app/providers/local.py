"""`local`: the built-in offline provider.

Deterministic: the same conversation always gets the same answer, so demos and tests are
repeatable. It counts tokens, streams word by word and can be given a latency
(`LOCAL_PROVIDER_LATENCY_MS`, applied before the first token) like any remote model. It also
calls tools and answers in JSON when a request asks for them, by rule (`local_tools`), so tool
loops and structured output can be tried offline.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import Iterator

from gaia_app.providers import local_tools
from gaia_app.providers.base import (
    ChatRequest,
    Completion,
    EnvProvider,
    ModelInfo,
    ProviderDeclaration,
    ProviderHealth,
    ProviderKind,
    StreamChunk,
    Usage,
)
from gaia_app.providers.common import count_tokens, prompt_tokens
from gaia_app.providers.local_tools import Reply

_SENTENCES = (
    "I hear you, and I am right here with you.",
    "That sounds like the start of a good adventure.",
    "Let us look at it together, one step at a time.",
    "Tell me more about what you see around you.",
    "There is a quiet path to the east that few travellers take.",
    "I remember a story about a lantern that never went out.",
    "Every question is a door; this one opens onto a garden.",
    "We can try that, and if it fails we will try something else.",
    "The wind is changing, and so are our chances.",
    "I think the answer is closer than it seems.",
)

# Tools are called and JSON answers made by rule (`local_tools`), never by a model.
CAPABILITIES = ("chat", "streaming", "tools", "json_schema")

MODELS = (
    ModelInfo(
        id="gaia-local",
        name="Gaia Local",
        provider="local",
        capabilities=CAPABILITIES,
        capabilities_known=True,
        context_window=8192,
        max_tokens=1024,
        input_price_per_mtok=0.0,
        output_price_per_mtok=0.0,
    ),
    ModelInfo(
        id="gaia-local-mini",
        name="Gaia Local Mini",
        provider="local",
        capabilities=CAPABILITIES,
        capabilities_known=True,
        context_window=4096,
        max_tokens=256,
        input_price_per_mtok=0.0,
        output_price_per_mtok=0.0,
    ),
)


# "You are Mu, a warm and curious companion ..." -> ("Mu", "a warm and curious companion")
_PERSONA_RE = re.compile(r"\bYou are ([A-Z][\w'-]*(?: [A-Z][\w'-]*)?)(?:, ([^.,;:!?\n]{3,80}))?")


def _introduction(messages) -> str | None:
    """The persona introducing itself, from the system prompt: so an offline demo shows whom
    the conversation is with, and that choosing another persona changes the answers."""
    for message in messages:
        if message.role == "system":
            found = _PERSONA_RE.search(message.content)
            if found:
                name, what = found.group(1), found.group(2)
                return f"{name} here, {what.strip()}." if what else f"{name} here."
    return None


class LocalProvider:
    kind = "local"
    capabilities = CAPABILITIES

    def __init__(self, declaration: ProviderDeclaration, on_change=lambda: None, clock=None) -> None:
        self.id = declaration.id
        self.name = declaration.name
        self.preferred_model = declaration.preferred_model
        self.latency_ms = declaration.options.get("latency_ms", 0.0)
        self._models = {model.id: model for model in MODELS}

    def list_models(self) -> list[ModelInfo]:
        return list(MODELS)

    def get_model(self, model_id: str) -> ModelInfo | None:
        return self._models.get(model_id)

    def health(self) -> ProviderHealth:
        return ProviderHealth(status="available", latency_ms=0.0)

    def record_failure(self, error) -> None:
        pass

    def _answer(self, request: ChatRequest, conversation, schema: dict | None, choice: int = 0) -> Reply:
        """One answer: chosen by the conversation (`conversation`, the hash of its messages and
        `seed`) and which of `n` it is, cut at the first `stop` string or the token limit. Tool
        calls or JSON when the request asks for them (`local_tools`; `schema`, the one JSON
        mode fills)."""
        model = self._models[request.model]
        limit = min(request.max_tokens or model.max_tokens or 256, model.max_tokens or 256)
        hashed = conversation.copy()
        if choice:
            hashed.update(f"\x1dchoice={choice}".encode())
        digest = hashed.digest()
        rng = random.Random(digest)
        words: list[str] = []
        finish = "stop"
        leads = [_introduction(request.messages), local_tools.results_lead(request)]
        for sentence in [lead for lead in leads if lead] + rng.sample(_SENTENCES, k=rng.randint(1, 3)):
            for word in sentence.split(" "):
                if count_tokens(" ".join(words + [word])) > limit:
                    finish = "length"
                    break
                words.append(word)
            if finish == "length":
                break
        structured = local_tools.structured_reply(request, digest, " ".join(words), limit, schema)
        if structured is not None:
            return structured
        cut = _cut_at_stop(words, request.options.get("stop"))
        return local_tools.text_reply(cut, "stop" if cut != words else finish)

    def _choices(self, request: ChatRequest) -> list[Reply]:
        """Every choice (`n`); what they share (the conversation's hash, JSON mode's schema)
        worked out once."""
        seed = request.options.get("seed")
        conversation = hashlib.sha256(
            "\x1e".join(f"{m.role}\x1f{m.content}" for m in request.messages).encode()
            + (f"\x1dseed={seed}" if seed is not None else "").encode()
        )
        schema = local_tools.prompt_schema(request)
        return [self._answer(request, conversation, schema, index) for index in range(request.options.get("n") or 1)]

    def _usage(self, request: ChatRequest, replies: list[Reply]) -> Usage:
        return Usage(prompt_tokens(request.messages), sum(reply.tokens for reply in replies))

    def complete(self, request: ChatRequest) -> Completion:
        replies = self._choices(request)
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        usage = self._usage(request, replies)
        raw = None
        if request.relay:
            raw = {
                "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
                "created": int(time.time()), "model": request.relay_model or request.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [
                    {"index": index, "message": reply.message(), "logprobs": None,
                     "finish_reason": reply.finish_reason}
                    for index, reply in enumerate(replies)
                ],
                "usage": usage.as_dict(),
            }
        first = replies[0]
        return Completion(text=first.content or "", model=request.model, usage=usage,
                          finish_reason=first.finish_reason, raw=raw, tool_calls=first.calls)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        replies = self._choices(request)
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        usage = self._usage(request, replies)
        if not request.relay:
            for piece in replies[0].pieces:
                yield StreamChunk(text=piece)
            yield StreamChunk(usage=usage, finish_reason=replies[0].finish_reason, tool_calls=replies[0].calls)
            return
        events = _ChunkEvents(request.relay_model or request.model)
        for index, reply in enumerate(replies):
            yield StreamChunk(raw=events.chunk(index, reply.role_delta()))
        for index, reply in enumerate(replies):
            for text, delta in reply.deltas():
                yield StreamChunk(text=text if index == 0 else "", raw=events.chunk(index, delta))
        for index, reply in enumerate(replies):
            yield StreamChunk(raw=events.chunk(index, {}, reply.finish_reason))
        if request.relay_usage:
            yield StreamChunk(raw=events.usage(usage))
        yield StreamChunk(usage=usage, finish_reason=replies[0].finish_reason, tool_calls=replies[0].calls)


SYSTEM_FINGERPRINT = "gaia-local-1"


def _cut_at_stop(words: list[str], stop) -> list[str]:
    if not stop:
        return words
    text = " ".join(words)
    cuts = [text.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in text]
    return text[: min(cuts)].split(" ") if cuts and min(cuts) > 0 else ([] if cuts else words)


class _ChunkEvents:
    """`chat.completion.chunk` events of one local answer, in OpenAI's shape."""

    def __init__(self, model: str) -> None:
        self.base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model, "system_fingerprint": SYSTEM_FINGERPRINT}

    def _event(self, body: dict) -> bytes:
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def chunk(self, index: int, delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._event({**self.base, "choices": [choice]})

    def usage(self, usage: Usage) -> bytes:
        return self._event({**self.base, "choices": [], "usage": usage.as_dict()})


KIND = ProviderKind(
    kind="local",
    adapter=LocalProvider,
    environment=(
        EnvProvider(
            id="local", name="Gaia local (offline)", disabled_by="GAIA_DISABLE_LOCAL_PROVIDER",
            options={"latency_ms": ("LOCAL_PROVIDER_LATENCY_MS", 0.0)},
            preferred_model="gaia-local", rank=90,
        ),
    ),
    # It needs no address or key: there is only ever one.
    declarable=False,
)
