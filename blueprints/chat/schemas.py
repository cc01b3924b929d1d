"""Request and response schemas of the chat service (providers, models, chat); personas and
conversations have theirs in `library_schemas`."""

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from blueprints.chat.openai_request import MAX_TOOLS
from gaia_app.schemas import NOT_BLANK, JSONBoolean, JSONInteger, JSONNumber, SafeString

CAPABILITIES = ("chat", "streaming", "vision", "tools", "embeddings")


class PricingSchema(Schema):
    currency = SafeString()
    input_per_million_tokens = fields.Float(allow_none=True)
    output_per_million_tokens = fields.Float(allow_none=True)


class ModelSchema(Schema):
    id = SafeString(required=True)
    name = SafeString()
    provider = SafeString()
    capabilities = fields.List(SafeString())
    context_window = fields.Integer(allow_none=True)
    max_tokens = fields.Integer(allow_none=True)
    pricing = fields.Nested(PricingSchema, allow_none=True)


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
    total = fields.Integer()


class ModelQuerySchema(Schema):
    provider = SafeString(validate=validate.Length(min=1, max=64))
    capability = SafeString(validate=validate.OneOf(CAPABILITIES))


class ProviderSchema(Schema):
    id = SafeString()
    name = SafeString()
    status = SafeString(metadata={"description": "available, degraded or unavailable"})
    models = fields.List(SafeString(), metadata={"description": "The provider's model ids"})
    capabilities = fields.List(SafeString())


class ProviderDetailSchema(ProviderSchema):
    models = fields.List(fields.Nested(ModelSchema))


class ProviderListSchema(Schema):
    providers = fields.List(fields.Nested(ProviderSchema))
    total_providers = fields.Integer()


class ProviderHealthSchema(Schema):
    id = SafeString()
    status = SafeString()
    latency_ms = fields.Float(allow_none=True)
    detail = SafeString(allow_none=True)


class ToolResultSchema(Schema):
    class Meta:
        unknown = RAISE

    tool_call_id = SafeString(required=True, validate=validate.Length(min=1, max=128),
                              metadata={"description": "The `id` of a tool call of the conversation's last answer"})
    # Too long (CHAT_MAX_MESSAGE_CHARS) is refused by the chat service.
    content = SafeString(required=True, metadata={"description": "What the tool did or returned, as text (JSON is fine)"})


class ToolCallSchema(Schema):
    id = SafeString(metadata={"description": "Answer it with a tool result of this `tool_call_id`"})
    name = SafeString(metadata={"description": "The function to call"})
    arguments = SafeString(metadata={"description": "Its arguments: a JSON object, as text"})


class ChatRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    # Blank and too long (CHAT_MAX_MESSAGE_CHARS) are refused by the chat service.
    message = SafeString(validate=validate.Length(min=1), metadata={
        "description": "The user's new message (not blank). Required unless `tool_results` are given.",
        **NOT_BLANK,
    })
    model = SafeString(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "A model id, or `provider/model`; the deployment's default if absent."},
    )
    provider = SafeString(validate=validate.Length(min=1, max=64))
    persona_id = fields.UUID(metadata={"description": "Else the conversation's, the user's chosen or the default persona."})
    conversation_id = fields.UUID(metadata={"description": "Continue this conversation; a new one when absent."})
    stream = JSONBoolean(load_default=False)
    max_tokens = JSONInteger(validate=validate.Range(min=1, max=1_000_000))
    temperature = JSONNumber(validate=validate.Range(min=0, max=2))
    fallback = JSONBoolean(
        load_default=True,
        metadata={"description": "Allow an equivalent model on another provider when this one fails before answering."},
    )
    # Checked as /v1 checks them (`openai_request`), once merged with the persona's actions.
    tools = fields.List(fields.Dict(), validate=validate.Length(max=MAX_TOOLS), metadata={"description": (
        "OpenAI function tools the model may call: `{\"type\": \"function\", \"function\": {\"name\", "
        "\"description\", \"parameters\"}}`; the persona's actions are added after them."
    )})
    tool_choice = fields.Raw(metadata={"description": (
        "`auto`, `none`, `required`, or `{\"type\": \"function\", \"function\": {\"name\"}}`"
    )})
    parallel_tool_calls = JSONBoolean(metadata={"description": "Whether one answer may call several tools"})
    response_format = fields.Dict(metadata={"description": (
        "`{\"type\": \"json_object\"}` or `{\"type\": \"json_schema\", \"json_schema\": {\"name\", "
        "\"schema\"}}`: the answer is JSON (valid for the schema)"
    )})
    tool_results = fields.List(
        fields.Nested(ToolResultSchema), validate=validate.Length(min=1, max=MAX_TOOLS),
        metadata={"description": (
            "The results of the tools the conversation's last answer called, one for each call "
            "(needs `conversation_id`); `message` is then optional."
        )},
    )

    @validates_schema
    def message_or_results(self, data, **kwargs):
        if "message" not in data and not data.get("tool_results"):
            raise ValidationError("Missing data for required field.", "message")


class TokenUsageSchema(Schema):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class ChatResponseSchema(Schema):
    response = SafeString()
    provider = SafeString()
    model = SafeString()
    conversation_id = fields.UUID()
    persona_id = fields.UUID(allow_none=True)
    finish_reason = SafeString(metadata={"description": "stop, length or tool_calls"})
    tool_calls = fields.List(fields.Nested(ToolCallSchema), metadata={
        "description": "Present when the answer calls tools: send their results back (`tool_results`)"})
    usage = fields.Nested(TokenUsageSchema)
    response_time_ms = fields.Float()
