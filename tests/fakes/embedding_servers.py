"""A loopback fake of OpenAI's Embeddings API (https://platform.openai.com/docs/api-reference/embeddings).

`FakeOpenAIEmbeddings` is the Chat Completions fake of `llm_servers` that also answers
`POST /v1/embeddings` as the real API does: one vector per input, in float or as base64 of the
little-endian float32 bytes, `dimensions` for the v3 models only and at most their size, and
its errors (400 with code and param for bad input, 401 for a wrong key, 403 for a model that
does not embed, 404 for an unknown model, 429 with retry-after as `Behaviour` says). Every
request is recorded like the base class's.

Vectors are deterministic: drawn from a hash of the model and the input, then normalised, so
a test can compute what the fake answers (`fake.vector(model, input)`). "Tokens" are
whitespace-separated words for text, and the ids for token arrays.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct

from tests.fakes.llm_servers import GARBAGE, FakeOpenAI

EMBEDDINGS_PATH = "/v1/embeddings"
# Model id -> (native dimensions, whether `dimensions` may shorten it).
EMBEDDING_MODELS = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
_REFERENCE = "Please check the API reference: https://platform.openai.com/docs/api-reference."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inputs(value) -> list | None:
    """The inputs (strings or token lists) of a valid `input`, else None."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(_is_int(item) for item in value):
        return [value]
    if all(isinstance(item, str) for item in value):
        return value
    if all(isinstance(item, list) and item and all(_is_int(t) for t in item) for item in value):
        return value
    return None


class FakeOpenAIEmbeddings(FakeOpenAI):
    """OpenAI Chat Completions and Embeddings."""

    def __init__(self, models=("gpt-4o-mini", *EMBEDDING_MODELS), api_key="sk-fake-openai",
                 embedding_models=None):
        super().__init__(models, api_key)
        # Which of `models` embed (the others answer 403, as OpenAI's chat models do).
        self.embedding_models = dict(EMBEDDING_MODELS if embedding_models is None else embedding_models)

    def vector(self, model: str, item, dimensions: int | None = None) -> list[float]:
        """What the fake answers for one input (a string or a list of token ids)."""
        native = self.embedding_models[model][0]
        size = dimensions or native
        rng = random.Random(hashlib.sha256(f"{model}\x1f{item!r}".encode()).digest())
        values = [rng.gauss(0.0, 1.0) for _ in range(native)][:size]
        norm = math.sqrt(sum(v * v for v in values))
        return list(struct.unpack(f"<{size}f", struct.pack(f"<{size}f", *(v / norm for v in values))))

    def _handle(self, h, path, body):
        if (h.command, path) != ("POST", EMBEDDINGS_PATH):
            return super()._handle(h, path, body)
        b = h.behaviour
        error = self._auth_error(h) or (self._forced_error(b) if b.status is not None else None)
        if error is None and not isinstance(body, dict):
            error = self._error(400, "We could not parse the JSON body of your request.",
                                "invalid_request_error")
        answer = None
        if error is None:
            error, answer = self._embed(body)
        if error is not None:
            return h.send_json(*error)
        h.pause(b.first_token_delay)
        if b.garbage:
            return h.send_raw(200, GARBAGE, "application/json")
        h.send_json(200, answer)

    def _bad(self, message, code=None, param=None, status=400):
        return self._error(status, message, "invalid_request_error", code, param), None

    def _check(self, body):
        """The first problem of the request, as (error, None); None when there is none."""
        model, value = body.get("model"), body.get("input")
        encoding, dimensions = body.get("encoding_format"), body.get("dimensions")
        if not model:
            return self._bad("you must provide a model parameter")
        if "input" not in body:
            return self._bad("Missing required parameter: 'input'.", "missing_required_parameter", "input")
        if isinstance(value, list) and len(value) > MAX_INPUTS and not _is_int(value[0]):
            return self._bad(f"Invalid 'input': array too long. Expected an array with maximum length "
                             f"{MAX_INPUTS}, but got an array with length {len(value)} instead.",
                             "array_above_max_length", "input")
        inputs = _inputs(value)
        if inputs is None or any(item == "" for item in inputs):
            return self._bad(f"'$.input' is invalid. {_REFERENCE}", "invalid_value", "input")
        if encoding not in (None, "float", "base64"):
            return self._bad(f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
                             "invalid_value", "encoding_format")
        if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
            return self._bad("Invalid 'dimensions': integer below minimum value. Expected a value >= 1.",
                             "integer_below_min_value", "dimensions")
        if model not in self.models:
            return self._bad(f"The model `{model}` does not exist or you do not have access to it.",
                             "model_not_found", status=404)
        if model not in self.embedding_models:
            return self._bad("You are not allowed to generate embeddings from this model", status=403)
        return None

    def _embed(self, body):
        problem = self._check(body)
        if problem is not None:
            return problem
        model, dimensions = body["model"], body.get("dimensions")
        native, shortens = self.embedding_models[model]
        if dimensions is not None and not shortens:
            return self._bad("This model does not support specifying dimensions.", "invalid_value", "dimensions")
        if dimensions is not None and dimensions > native:
            return self._bad(f"Invalid value for 'dimensions' = {dimensions}. Must be less than or "
                             f"equal to {native}.", "invalid_value", "dimensions")
        inputs = _inputs(body["input"])
        counts = [len(item) if isinstance(item, list) else len(item.split()) for item in inputs]
        if max(counts) > MAX_INPUT_TOKENS:
            return self._bad(f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                             f"you requested {max(counts)} tokens. Please reduce your prompt.",
                             "context_length_exceeded", "input")
        data = []
        for index, item in enumerate(inputs):
            vector = self.vector(model, item, dimensions)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return None, {"object": "list", "data": data, "model": model, "usage": usage}
