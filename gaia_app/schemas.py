"""Schemas shared by every service (the problem body, common query arguments)."""

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text everywhere (PostgreSQL refuses NUL), or None."""
    if "\x00" in value:
        return "Text may not contain NUL (\\u0000) characters."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Text must be valid Unicode (it has a lone surrogate)."
    return None


class SafeString(fields.String):
    """A string every database and provider accepts: no NUL, no lone surrogates."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        problem = text_problem(value)
        if problem:
            raise ValidationError(problem)
        return value


class FieldProblemSchema(Schema):
    field = fields.String(allow_none=True, metadata={"description": "Dotted path of the field"})
    location = fields.String(metadata={"description": "json, query, headers ..."})
    message = fields.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details: the body of every error response. Like the RFC, it allows
    extension members; the ones Gaia sends are documented here."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(metadata={"example": "/problems/validation"})
    title = fields.String(metadata={"example": "Validation failed"})
    status = fields.Integer(metadata={"example": 422})
    detail = fields.String()
    errors = fields.List(fields.Nested(FieldProblemSchema))
    available = fields.List(
        fields.String(), metadata={"description": "For an unknown model or provider: the ones there are"}
    )


# Documentation of a rule a validator enforces in another way (JSON Schema patterns search,
# they are not anchored): the text has a character that is not white space.
NOT_BLANK = {"pattern": r"\S"}


def cursor_field() -> fields.Field:
    """`?cursor=`: what a list's `next_cursor` gave out (base64url)."""
    return SafeString(
        validate=[validate.Length(max=200),
                  validate.Regexp(r"^[A-Za-z0-9_-]*$", error="The cursor is not one this API gave out.")],
        metadata={"description": "The `next_cursor` of the previous page"},
    )


# Body fields take JSON's own types: a client that sends "10", 10.5 or "yes" is told so,
# not coerced. (Query strings are text, so their schemas keep the converting fields.)


class JSONInteger(fields.Integer):
    """10, not "10", 10.5 or true."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class JSONNumber(fields.Float):
    """0.7 or 1, not "0.7" or true."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class JSONBoolean(fields.Boolean):
    """true or false, not "yes", 1 or "true"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class OpenAIErrorDetailSchema(Schema):
    message = fields.String()
    type = fields.String(metadata={"example": "invalid_request_error"})
    param = fields.String(allow_none=True, metadata={"example": "max_tokens"})
    code = fields.String(allow_none=True, metadata={"example": "model_not_found"})


class OpenAIErrorSchema(Schema):
    """OpenAI's error body: what every error under /v1 is."""

    error = fields.Nested(OpenAIErrorDetailSchema)
