"""What the OpenAPI document says of the OpenAI-compatible API under /v1.

The /v1 routes read their bodies themselves (OpenAI's error shape and `param` names), so these
schemas only document the wire: they validate nothing and shape nothing.
"""

from marshmallow import INCLUDE, Schema, fields, validate

from gaia_app.schemas import NOT_BLANK

ROLES = ("system", "developer", "user", "assistant", "tool", "function")

_PART = {
    "type": "object", "required": ["type"],
    "properties": {"type": {"enum": ["text", "image_url", "input_audio", "file", "refusal"]}},
    "description": "text {text}, image_url {image_url: {url: https or data:image, detail}}, "
                   "input_audio {input_audio: {data, format}}, file {file}; assistants: text or refusal",
}
_FUNCTION_TOOL = {
    "type": "object", "required": ["type", "function"],
    "properties": {"type": {"enum": ["function"]},
                   "function": {"type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                                               "parameters": {"type": "object"}, "strict": {"type": "boolean"}}}},
}
_TOOL_CALL = {
    "type": "object", "required": ["id", "type", "function"],
    "properties": {"id": {"type": "string"}, "type": {"enum": ["function"]},
                   "function": {"type": "object", "properties": {"name": {"type": "string"},
                                                                 "arguments": {"type": "string"}}}},
}


class OpenAIChatMessageSchema(Schema):
    class Meta:
        unknown = INCLUDE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = fields.Raw(
        allow_none=True,
        metadata={"description": "A string, an array of content parts, or null (an assistant's "
                                 "message with tool calls)",
                  "oneOf": [{"type": "string"}, {"type": "array", "items": _PART}, {"type": "null"}]},
    )
    name = fields.String()
    tool_calls = fields.List(fields.Raw(metadata=_TOOL_CALL), metadata={"description": "An assistant's tool calls"})
    tool_call_id = fields.String(metadata={"description": "A tool result: the call it answers"})


class OpenAIStreamOptionsSchema(Schema):
    include_usage = fields.Boolean()


class OpenAIChatCompletionRequestSchema(Schema):
    class Meta:
        # Every other Chat Completions parameter: forwarded, translated or refused by name
        # according to the provider (README, "OpenAI-compatible parameters").
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
    n = fields.Integer(validate=validate.Range(min=1, max=128))
    tools = fields.List(fields.Raw(metadata=_FUNCTION_TOOL), validate=validate.Length(max=128))
    tool_choice = fields.Raw(metadata={"description": "none, auto, required, or "
                                                      "{type: function, function: {name}}"})
    response_format = fields.Raw(metadata={"description": "{type: text | json_object | json_schema, "
                                                          "json_schema: {name, schema, strict}}"})


class _Open(Schema):
    """Relayed as the provider made it: members beyond these pass through."""

    class Meta:
        unknown = INCLUDE


class OpenAIAssistantMessageSchema(_Open):
    role = fields.String(metadata={"example": "assistant"})
    content = fields.String(allow_none=True)
    refusal = fields.String(allow_none=True)
    tool_calls = fields.List(fields.Raw(metadata=_TOOL_CALL))


class OpenAIChoiceSchema(_Open):
    index = fields.Integer()
    message = fields.Nested(OpenAIAssistantMessageSchema)
    logprobs = fields.Raw(allow_none=True)
    finish_reason = fields.String(metadata={"description": "stop, length, tool_calls, content_filter "
                                                           "or function_call"})


class OpenAICompletionUsageSchema(_Open):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class OpenAIChatCompletionSchema(_Open):
    id = fields.String()
    object = fields.String(metadata={"example": "chat.completion"})
    created = fields.Integer()
    model = fields.String()
    system_fingerprint = fields.String(allow_none=True)
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
