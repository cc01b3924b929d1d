"""Reading an Embeddings request as OpenAI defines it, each problem a 400 naming its field.

`input` is a string, an array of strings, an array of token ids or an array of arrays of token
ids: at most MAX_INPUTS inputs, none empty. `encoding_format` is `float` (the default) or
`base64`, `dimensions` a positive integer, `user` a string. What passes is kept as it came, so
an OpenAI-kind provider sees what the client sent; limits that depend on the model (its
dimensions, its tokens per input) are the provider's to check (`local`'s in
`providers.embeddings.check_local`).
"""

from __future__ import annotations

from dataclasses import dataclass

from blueprints.chat.openai_request import invalid
from gaia_app.providers.embeddings import Input

MAX_INPUTS = 2048
ENCODINGS = ("float", "base64")
FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
_INPUT_FORMS = ("'input' must be a string, an array of strings, an array of token ids, or an "
                "array of arrays of token ids.")


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    inputs: tuple[Input, ...]
    encoding_format: str
    dimensions: int | None
    # Fields beyond OpenAI's, in the order sent: OpenAI-kind providers get them as they are.
    unknown_fields: tuple[str, ...]


def _is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_ids(values: list, param: str) -> tuple[int, ...]:
    if not values:
        raise invalid(f"{param} must not be an empty array of token ids.", param)
    for index, value in enumerate(values):
        if not _is_token(value) or value < 0:
            raise invalid(f"{param}[{index}] must be a token id: an integer of 0 or more.", f"{param}[{index}]")
    return tuple(values)


def read_inputs(value) -> tuple[Input, ...]:
    if isinstance(value, str):
        if not value:
            raise invalid("'input' cannot be an empty string.", "input")
        return (value,)
    if not isinstance(value, list):
        raise invalid(_INPUT_FORMS, "input")
    if not value:
        raise invalid("'input' cannot be an empty array.", "input")
    if all(_is_token(item) for item in value):
        return (_token_ids(value, "input"),)
    if len(value) > MAX_INPUTS:
        raise invalid(f"'input' may hold at most {MAX_INPUTS} inputs; it has {len(value)}.", "input")
    if all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise invalid(f"input[{index}] cannot be an empty string.", f"input[{index}]")
        return tuple(value)
    if all(isinstance(item, list) for item in value):
        return tuple(_token_ids(item, f"input[{index}]") for index, item in enumerate(value))
    raise invalid(_INPUT_FORMS, "input")


def read_request(body: dict) -> EmbeddingsRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise invalid("'model' is required: an embedding model id from GET /v1/models.", "model")
    if "input" not in body:
        raise invalid("'input' is required: the text (or token ids) to embed.", "input")
    inputs = read_inputs(body["input"])
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise invalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_token(dimensions) or dimensions < 1):
        raise invalid("'dimensions' must be an integer of 1 or more.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("'user' must be a string.", "user")
    return EmbeddingsRequest(
        model=model, inputs=inputs, encoding_format=encoding or "float", dimensions=dimensions,
        unknown_fields=tuple(name for name in body if name not in FIELDS),
    )
