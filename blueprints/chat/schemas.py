"""Request and response schemas of the chat service (providers, models, chat); personas and
conversations have theirs in `library_schemas`."""

from marshmallow import RAISE, Schema, fields, validate

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


class ChatRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    # Blank and too long (CHAT_MAX_MESSAGE_CHARS) are refused by the chat service.
    message = SafeString(required=True, validate=validate.Length(min=1),
                         metadata={"description": "The user's new message (not blank).", **NOT_BLANK})
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
    finish_reason = SafeString(metadata={"description": "stop or length"})
    usage = fields.Nested(TokenUsageSchema)
    response_time_ms = fields.Float()
