"""Schemas shared by every service (the problem body, common query arguments)."""

from marshmallow import Schema, fields


class FieldProblemSchema(Schema):
    field = fields.String(allow_none=True, metadata={"description": "Dotted path of the field"})
    location = fields.String(metadata={"description": "json, query, headers ..."})
    message = fields.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details: the body of every error response."""

    type = fields.String(metadata={"example": "/problems/validation"})
    title = fields.String(metadata={"example": "Validation failed"})
    status = fields.Integer(metadata={"example": 422})
    detail = fields.String()
    errors = fields.List(fields.Nested(FieldProblemSchema))
