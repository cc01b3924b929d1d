"""What the OpenAPI document says of the OpenAI-compatible API under /v1.

The /v1 routes read their bodies themselves (OpenAI's error shape and `param` names), so these
schemas only document the wire: they validate nothing and shape nothing.
"""

from marshmallow import INCLUDE, Schema, fields, validate

from gaia_app.schemas import NOT_BLANK

ROLES = ("system", "developer", "user", "assistant")


_TEXT_PARTS = {
    "type": "array",
    "items": {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}}},
}


class OpenAIChatMessageSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = fields.Raw(
        required=True,
        metadata={"description": "A string, or an array of text parts",
                  "oneOf": [{"type": "string"},
                            _TEXT_PARTS]},
    )


class OpenAIStreamOptionsSchema(Schema):
    include_usage = fields.Boolean()


class OpenAIChatCompletionRequestSchema(Schema):
    class Meta:
        # Other Chat Completions parameters are taken and not applied today.
        unknown = INCLUDE

    model = fields.String(required=True, validate=validate.Length(min=1, max=200),
                          metadata={"description": "A model id from GET /v1/models, or persona:<name>", **NOT_BLANK})
    messages = fields.List(fields.Nested(OpenAIChatMessageSchema), required=True,
                           validate=validate.Length(min=1),
                           metadata={"description": "At least one user message"})
    stream = fields.Boolean()
    stream_options = fields.Nested(OpenAIStreamOptionsSchema)
    max_tokens = fields.Integer(validate=validate.Range(min=1, max=1_000_000))
    max_completion_tokens = fields.Integer(validate=validate.Range(min=1, max=1_000_000))
    temperature = fields.Float(validate=validate.Range(min=0, max=2))
    n = fields.Integer(validate=validate.OneOf([1]))


class OpenAIAssistantMessageSchema(Schema):
    role = fields.String(metadata={"example": "assistant"})
    content = fields.String(allow_none=True)
    refusal = fields.String(allow_none=True)


class OpenAIChoiceSchema(Schema):
    index = fields.Integer()
    message = fields.Nested(OpenAIAssistantMessageSchema)
    logprobs = fields.Raw(allow_none=True)
    finish_reason = fields.String(metadata={"description": "stop or length"})


class OpenAICompletionUsageSchema(Schema):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class OpenAIChatCompletionSchema(Schema):
    id = fields.String()
    object = fields.String(metadata={"example": "chat.completion"})
    created = fields.Integer()
    model = fields.String()
    choices = fields.List(fields.Nested(OpenAIChoiceSchema))
    usage = fields.Nested(OpenAICompletionUsageSchema)


class OpenAIModelObjectSchema(Schema):
    id = fields.String()
    object = fields.String(metadata={"example": "model"})
    created = fields.Integer()
    owned_by = fields.String()


class OpenAIModelObjectListSchema(Schema):
    object = fields.String(metadata={"example": "list"})
    data = fields.List(fields.Nested(OpenAIModelObjectSchema))


STREAM_DESCRIPTION = (
    "With `\"stream\": true`: server-sent events, each `data:` a `chat.completion.chunk` "
    "object, then `data: [DONE]`."
)
