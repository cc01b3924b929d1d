"""What the OpenAPI document says of `POST /v1/embeddings`.

Like the other /v1 routes, the view reads its body itself (OpenAI's error shape and `param`
names, `embeddings_request`), so these schemas only document the wire.
"""

from marshmallow import INCLUDE, Schema, fields, validate

from blueprints.chat.embeddings_request import ENCODINGS, MAX_INPUTS
from gaia_app.schemas import NOT_BLANK

_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}


class OpenAIEmbeddingRequestSchema(Schema):
    class Meta:
        # Other fields go to OpenAI-kind providers as they are; `local` refuses them by name.
        unknown = INCLUDE

    model = fields.String(
        required=True, validate=validate.Length(min=1, max=200),
        metadata={"description": "An embedding model from GET /v1/models (gaia-local-embed, "
                                 "<provider>/<model>, or an OpenAI-kind provider's model)",
                  "example": "gaia-local-embed", **NOT_BLANK})
    input = fields.Raw(
        required=True,
        metadata={"description": f"The text to embed: a string, or up to {MAX_INPUTS} strings, "
                                 "or token ids (one array, or an array of arrays); never empty",
                  "example": "The lantern never went out.",
                  "oneOf": [{"type": "string", "minLength": 1},
                            {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS,
                             "items": {"type": "string", "minLength": 1}},
                            _TOKENS,
                            {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": _TOKENS}]},
    )
    encoding_format = fields.String(
        validate=validate.OneOf(ENCODINGS),
        metadata={"description": "float (the default), or base64: the little-endian float32 "
                                 "bytes of each vector"})
    dimensions = fields.Integer(
        validate=validate.Range(min=1),
        metadata={"description": "Keep this many dimensions (at most the model's: 256 for "
                                 "gaia-local-embed), normalised again"})
    user = fields.String(metadata={"description": "Your end user's id; forwarded, no effect on local"})


class OpenAIEmbeddingSchema(Schema):
    object = fields.String(metadata={"example": "embedding"})
    index = fields.Integer()
    embedding = fields.Raw(metadata={
        "description": "The vector, or with encoding_format base64 its float32 bytes in base64",
        "oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]})


class OpenAIEmbeddingUsageSchema(Schema):
    prompt_tokens = fields.Integer()
    total_tokens = fields.Integer()


class OpenAIEmbeddingListSchema(Schema):
    object = fields.String(metadata={"example": "list"})
    data = fields.List(fields.Nested(OpenAIEmbeddingSchema))
    model = fields.String()
    usage = fields.Nested(OpenAIEmbeddingUsageSchema)
