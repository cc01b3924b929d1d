"""Embeddings (OpenAI's Embeddings API) from the providers that have them.

- OpenAI-kind providers get the request as the client sent it (only the model resolved) at
  their `POST /embeddings`, and their answer goes back byte for byte.
- `local` serves `gaia-local-embed`: a deterministic model, 256 dimensions of hashed word,
  word-pair and character-trigram features, L2-normalised, so texts that share words (or word
  stems) are near each other. `dimensions` keeps the first components and normalises again,
  as OpenAI's v3 models do; token-id inputs embed from their ids.
- `anthropic` has no embeddings API: naming it is refused.

Which provider a model id names: `<provider>/<model>`; else the provider that lists it as an
embedding model (`gaia-local-embed`, OpenAI's known ones, models declared with the
`embeddings` capability); else the OpenAI-kind provider that lists it (it decides); else the
first OpenAI-kind provider in preference order. A model Gaia knows as a chat model, or one only
a provider without embeddings lists, is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from gaia_app.providers.base import LLMProvider, ModelInfo, ProviderError
from gaia_app.providers.common import count_tokens

EMBEDDINGS = "embeddings"
LOCAL_MODEL_ID = "gaia-local-embed"
LOCAL_DIMENSIONS = 256
# OpenAI's documented limits: per input, and summed over one request's inputs.
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
# The largest answer read from a provider: 2048 inputs of 3072 dimensions in base64 fit.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

LOCAL_MODEL = ModelInfo(
    id=LOCAL_MODEL_ID, name="Gaia Local Embeddings", provider="local", capabilities=(EMBEDDINGS,),
    context_window=MAX_INPUT_TOKENS, input_price_per_mtok=0.0, output_price_per_mtok=0.0,
)
# OpenAI's embedding models (which its model list shows but chat leaves out): dimensions and
# list price in USD per million input tokens.
OPENAI_EMBEDDING_MODELS = {
    "text-embedding-3-small": (1536, 0.02),
    "text-embedding-3-large": (3072, 0.13),
    "text-embedding-ada-002": (1536, 0.10),
}

Input = str | tuple[int, ...]


class EmbeddingRefused(Exception):
    """A request this deployment will not embed; `param` names the field it is about and
    `code` is OpenAI's code for it, where there is one."""

    def __init__(self, message: str, param: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class UnknownEmbeddingModel(Exception):
    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.available = available


@dataclass(frozen=True)
class EmbeddingCall:
    body: dict  # the request as the client sent it, `model` resolved to the provider's id
    inputs: tuple[Input, ...]
    encoding_format: str  # "float" or "base64"
    dimensions: int | None = None


@dataclass(frozen=True)
class EmbeddingAnswer:
    content: bytes  # the answer's JSON, to send as it is
    prompt_tokens: int


# -- which models, on which provider ------------------------------------------------------


def _model_of(provider: LLMProvider, model_id: str) -> ModelInfo:
    facts = OPENAI_EMBEDDING_MODELS.get(model_id) if getattr(provider, "is_openai", False) else None
    return ModelInfo(
        id=model_id, name=model_id, provider=provider.id, capabilities=(EMBEDDINGS,),
        context_window=MAX_INPUT_TOKENS if facts else None,
        input_price_per_mtok=facts[1] if facts else None,
        output_price_per_mtok=0.0 if facts else None,
    )


def embedding_models(provider: LLMProvider) -> list[ModelInfo]:
    """The embedding models a provider is known to have."""
    if provider.kind == "local":
        return [replace(LOCAL_MODEL, provider=provider.id)]
    if provider.kind != "openai":
        return []
    found = ([_model_of(provider, model_id) for model_id in OPENAI_EMBEDDING_MODELS]
             if getattr(provider, "is_openai", False) else [])
    ids = {model.id for model in found}
    declared = [model for model in provider.list_models()
                if EMBEDDINGS in model.capabilities and model.id not in ids]
    return found + declared


def find_embedding_model(registry, model_id: str) -> ModelInfo | None:
    """A known embedding model by its id or `<provider>/<id>` (for `GET /v1/models/<id>`)."""
    prefix, slash, rest = model_id.partition("/")
    named = registry.get(prefix) if slash else None
    for provider in [named] if named is not None else registry.providers():
        for model in embedding_models(provider):
            if model.id == (rest if named is not None else model_id):
                return model
    return None


def _no_embeddings(provider: LLMProvider) -> EmbeddingRefused:
    return EmbeddingRefused(
        f"Provider '{provider.id}' ({provider.kind}) has no embeddings API; use {LOCAL_MODEL_ID} "
        "or an embedding model of an OpenAI-kind provider (GET /v1/models lists them).", "model")


def _chat_model(provider: LLMProvider, model_id: str) -> EmbeddingRefused:
    return EmbeddingRefused(
        f"'{model_id}' is a chat model of provider '{provider.id}', not an embedding model; "
        f"use {LOCAL_MODEL_ID} or an embedding model (GET /v1/models lists them).", "model")


def _on_provider(provider: LLMProvider, model_id: str, registry) -> ModelInfo:
    for model in embedding_models(provider):
        if model.id == model_id:
            return model
    if provider.kind == "openai":
        if model_id in (getattr(provider, "known", None) or {}):
            raise _chat_model(provider, model_id)
        return _model_of(provider, model_id)
    if provider.kind != "local":
        raise _no_embeddings(provider)
    if provider.get_model(model_id) is not None:
        raise _chat_model(provider, model_id)
    raise _unknown(f"{provider.id}/{model_id}", registry)


def _unknown(model_id: str, registry) -> UnknownEmbeddingModel:
    available = [model.id for provider in registry.providers() for model in embedding_models(provider)]
    return UnknownEmbeddingModel(
        f"Unknown embedding model '{model_id}'. Available embedding models: "
        f"{', '.join(available) or 'none'}.", available)


def resolve(registry, model_id: str) -> tuple[LLMProvider, ModelInfo]:
    """The provider and model that embed for `model_id` (see the module's docstring)."""
    prefix, slash, rest = model_id.partition("/")
    named = registry.get(prefix) if slash and rest else None
    if named is not None:
        return named, _on_provider(named, rest, registry)
    providers = registry.providers()
    for provider in providers:
        for model in embedding_models(provider):
            if model.id == model_id:
                return provider, model
    for provider in providers:
        if provider.get_model(model_id) is not None:
            return provider, _on_provider(provider, model_id, registry)
    for provider in providers:
        if provider.kind == "openai":
            return provider, _model_of(provider, model_id)
    raise _unknown(model_id, registry)


# -- embedding ----------------------------------------------------------------------------


def input_tokens(item: Input) -> int:
    return len(item) if isinstance(item, tuple) else count_tokens(item)


def check_local(call: EmbeddingCall, unknown_fields: Sequence[str]) -> None:
    """What `gaia-local-embed` refuses: fields it does not know, more dimensions than it has,
    and inputs beyond OpenAI's token limits."""
    if unknown_fields:
        name = unknown_fields[0]
        raise EmbeddingRefused(
            f"'{name}' is not supported by provider 'local' (local) for model '{LOCAL_MODEL_ID}'.", name)
    if call.dimensions is not None and call.dimensions > LOCAL_DIMENSIONS:
        raise EmbeddingRefused(
            f"{LOCAL_MODEL_ID} has {LOCAL_DIMENSIONS} dimensions: 'dimensions' must be from 1 to "
            f"{LOCAL_DIMENSIONS}.", "dimensions")
    total = 0
    for index, item in enumerate(call.inputs):
        tokens = input_tokens(item)
        if tokens > MAX_INPUT_TOKENS:
            raise EmbeddingRefused(
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens; input {index} "
                f"has about {tokens}.", f"input[{index}]" if len(call.inputs) > 1 else "input",
                "context_length_exceeded")
        total += tokens
    if total > MAX_REQUEST_TOKENS:
        raise EmbeddingRefused(
            f"At most {MAX_REQUEST_TOKENS} tokens may be embedded in one request; these inputs have "
            f"about {total}.", "input", "max_tokens_per_request")


def create(provider: LLMProvider, call: EmbeddingCall) -> EmbeddingAnswer:
    """Embed with this provider; a provider's failure raises ProviderError."""
    if provider.kind == "local":
        return _local_answer(call)
    if provider.kind == "openai":
        return _remote_answer(provider, call)
    raise _no_embeddings(provider)


def _remote_answer(provider, call: EmbeddingCall) -> EmbeddingAnswer:
    try:
        response = provider.http.request("POST", "/embeddings", call.body)
    except ProviderError as error:
        if error.upstream_status != 403:
            raise
        # On /embeddings a 403 is about the model (a chat model, or one the project may not
        # use), not about Gaia's credentials (a 401): the client hears the provider's words.
        raise ProviderError(error.provider, "rejected", error.message, upstream_status=403,
                            code=error.code, param=error.param or "model") from None
    content = provider.http.read_capped(
        response, MAX_ANSWER_BYTES, f"{provider.id} sent more than {MAX_ANSWER_BYTES} bytes of embeddings; "
        "ask for fewer inputs or dimensions, or for base64")
    try:
        data = json.loads(content)
    except ValueError:
        raise ProviderError(provider.id, "bad_response", f"{provider.id} sent embeddings that are not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ProviderError(provider.id, "bad_response", f"{provider.id} sent embeddings in an unknown shape")
    usage = data.get("usage")
    try:
        tokens = int(usage["prompt_tokens"])
    except (TypeError, KeyError, ValueError):
        tokens = sum(input_tokens(item) for item in call.inputs)  # counted here, rather than nothing
    return EmbeddingAnswer(content=content, prompt_tokens=tokens)


def _local_answer(call: EmbeddingCall) -> EmbeddingAnswer:
    data = []
    for index, item in enumerate(call.inputs):
        vector = local_embedding(item, call.dimensions or LOCAL_DIMENSIONS)
        data.append({"object": "embedding", "index": index,
                     "embedding": encode_base64(vector) if call.encoding_format == "base64" else vector})
    tokens = sum(input_tokens(item) for item in call.inputs)
    answer = {"object": "list", "data": data, "model": LOCAL_MODEL_ID,
              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return EmbeddingAnswer(content=json.dumps(answer, separators=(",", ":")).encode(), prompt_tokens=tokens)


# -- gaia-local-embed ---------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Feature weights: whole words count most, word pairs keep some order, and character trigrams
# make inflections ("ride", "riding") near.
_WORD, _PAIR, _GRAM = 1.0, 0.5, 0.3
# The characters of a word that give trigrams: a longer "word" is no language, and would only
# cost time.
_GRAMS_OF = 24
# Each feature adds to one component of the whole vector, and with less weight to one of the
# first 64 and one of the first 16: so the leading components, which `dimensions` keeps, carry
# something of every feature, as the leading components of OpenAI's v3 models do.
_LEVELS = ((LOCAL_DIMENSIONS, 1.0), (64, 0.5), (16, 0.25))
_BITS = 16  # of the hash, per level: the slot in the low bits, the sign in the highest


@lru_cache(maxsize=65536)
def _slots(feature: str) -> tuple[tuple[int, float], ...]:
    """The components a feature adds to, with their signed weights: from a stable hash
    (never Python's own, which changes from process to process)."""
    value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return tuple(
        ((value >> (_BITS * level)) % size,
         weight if (value >> (_BITS * level + _BITS - 1)) & 1 else -weight)
        for level, (size, weight) in enumerate(_LEVELS)
    )


@lru_cache(maxsize=32768)
def _word(word: str) -> tuple[tuple[int, float], ...]:
    """What one occurrence of a (lower-cased) word adds: the word and its character trigrams."""
    features = [("w:" + word, _WORD)]
    if word.isalnum() and len(word) > 2:
        padded = f"<{word[:_GRAMS_OF]}>"
        features += [("c:" + padded[start:start + 3], _GRAM) for start in range(len(padded) - 2)]
    added: dict[int, float] = {}
    for feature, weight in features:
        for slot, signed in _slots(feature):
            added[slot] = added.get(slot, 0.0) + signed * weight
    return tuple(added.items())


def _add(vector: list[float], feature: str, weight: float) -> None:
    for slot, signed in _slots(feature):
        vector[slot] += signed * weight


def _raw_vector(item: Input) -> list[float]:
    vector = [0.0] * LOCAL_DIMENSIONS
    if isinstance(item, tuple):
        units = [f"t:{token}" for token in item]
        for unit in units:
            _add(vector, unit, _WORD)
    else:
        units = [word.lower() for word in _TOKEN_RE.findall(unicodedata.normalize("NFKC", item))]
        for unit in units:
            for slot, value in _word(unit):
                vector[slot] += value
    for first, second in zip(units, units[1:]):
        _add(vector, f"p:{first} {second}", _PAIR)
    if not units:
        _add(vector, "s:" + str(item), _WORD)  # whitespace only: still a unit vector
    return vector


def local_embedding(item: Input, dimensions: int = LOCAL_DIMENSIONS) -> list[float]:
    """The unit vector of one input, its first `dimensions` components normalised again, in
    float32 values (what the base64 form carries, so both forms agree exactly)."""
    vector = _raw_vector(item)[:dimensions]
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0.0:
        vector, norm = [1.0] + [0.0] * (dimensions - 1), 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in vector))))


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 form: the little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
