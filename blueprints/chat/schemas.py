from marshmallow import Schema, fields, validate

CAPABILITIES = ("chat", "streaming", "vision", "tools", "embeddings")


class PricingSchema(Schema):
    currency = fields.String()
    input_per_million_tokens = fields.Float(allow_none=True)
    output_per_million_tokens = fields.Float(allow_none=True)


class ModelSchema(Schema):
    id = fields.String(required=True)
    name = fields.String()
    provider = fields.String()
    capabilities = fields.List(fields.String())
    context_window = fields.Integer(allow_none=True)
    max_tokens = fields.Integer(allow_none=True)
    pricing = fields.Nested(PricingSchema, allow_none=True)


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
    total = fields.Integer()


class ModelQuerySchema(Schema):
    provider = fields.String(validate=validate.Length(min=1, max=64))
    capability = fields.String(validate=validate.OneOf(CAPABILITIES))


class ProviderSchema(Schema):
    id = fields.String()
    name = fields.String()
    status = fields.String(metadata={"description": "available, degraded or unavailable"})
    models = fields.List(fields.String(), metadata={"description": "The provider's model ids"})
    capabilities = fields.List(fields.String())


class ProviderDetailSchema(ProviderSchema):
    models = fields.List(fields.Nested(ModelSchema))


class ProviderListSchema(Schema):
    providers = fields.List(fields.Nested(ProviderSchema))
    total_providers = fields.Integer()


class ProviderHealthSchema(Schema):
    id = fields.String()
    status = fields.String()
    latency_ms = fields.Float(allow_none=True)
    detail = fields.String(allow_none=True)
