"""`local`: the built-in offline provider.

Deterministic: the same conversation always gets the same answer, so demos and tests are
repeatable. It counts tokens, streams word by word and can be given a latency
(`LOCAL_PROVIDER_LATENCY_MS`, applied before the first token) like any remote model.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Iterator

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

MODELS = (
    ModelInfo(
        id="gaia-local",
        name="Gaia Local",
        provider="local",
        capabilities=("chat", "streaming"),
        context_window=8192,
        max_tokens=1024,
        input_price_per_mtok=0.0,
        output_price_per_mtok=0.0,
    ),
    ModelInfo(
        id="gaia-local-mini",
        name="Gaia Local Mini",
        provider="local",
        capabilities=("chat", "streaming"),
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
    capabilities = ("chat", "streaming")

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

    def _answer(self, request: ChatRequest) -> tuple[list[str], int, str]:
        model = self._models[request.model]
        limit = min(request.max_tokens or model.max_tokens or 256, model.max_tokens or 256)
        digest = hashlib.sha256(
            "\x1e".join(f"{m.role}\x1f{m.content}" for m in request.messages).encode()
        ).digest()
        rng = random.Random(digest)
        words: list[str] = []
        finish = "stop"
        introduction = _introduction(request.messages)
        for sentence in ([introduction] if introduction else []) + rng.sample(_SENTENCES, k=rng.randint(1, 3)):
            for word in sentence.split(" "):
                if count_tokens(" ".join(words + [word])) > limit:
                    finish = "length"
                    break
                words.append(word)
            if finish == "length":
                break
        return words, prompt_tokens(request.messages), finish

    def complete(self, request: ChatRequest) -> Completion:
        words, prompt, finish = self._answer(request)
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        text = " ".join(words)
        return Completion(
            text=text,
            model=request.model,
            usage=Usage(prompt_tokens=prompt, completion_tokens=count_tokens(text)),
            finish_reason=finish,
        )

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        words, prompt, finish = self._answer(request)
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        for index, word in enumerate(words):
            yield StreamChunk(text=word if index == 0 else " " + word)
        text = " ".join(words)
        yield StreamChunk(
            usage=Usage(prompt_tokens=prompt, completion_tokens=count_tokens(text)),
            finish_reason=finish,
        )


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
