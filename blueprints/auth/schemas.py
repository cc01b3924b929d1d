"""Request and response schemas of the auth service: they validate what comes in and shape
what goes out, and the OpenAPI document is generated from them."""

from datetime import timezone

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from gaia_app.identity.emails import MAX_EMAIL_LENGTH
from gaia_app.identity.passwords import MAX_LENGTH as MAX_PASSWORD, MIN_LENGTH as MIN_PASSWORD
from gaia_app.schemas import JSONBoolean, JSONInteger, SafeString, cursor_field
from gaia_app.identity.scopes import SCOPES

RATE_PATTERN = r"^\d{1,7}/(second|minute|hour|day)$"


def _email(**kwargs) -> fields.Field:
    return SafeString(validate=validate.Length(min=3, max=MAX_EMAIL_LENGTH),
                      metadata={"format": "email"}, **kwargs)


def _new_password(**kwargs) -> fields.Field:
    """A password being set: the policy's length here (and in the document); the rest of the
    policy (not common, not the email's name) is checked where the email is known."""
    return SafeString(
        validate=validate.Length(min=MIN_PASSWORD, max=MAX_PASSWORD,
                                 error="Must be at least {min} and at most {max} characters."),
        metadata={"description": f"{MIN_PASSWORD} to {MAX_PASSWORD} characters, not a common "
                                 "password, not containing the email's name (the part before @)"},
        **kwargs,
    )


class CredentialsSchema(Schema):
    email = _email(required=True)
    # Longer than the policy allows is refused here, before any hashing work.
    password = SafeString(required=True, validate=validate.Length(min=1, max=MAX_PASSWORD))


class RegisterSchema(Schema):
    email = _email(required=True)
    password = _new_password(required=True)
    name = SafeString(validate=validate.Length(max=200))


class RefreshSchema(Schema):
    refresh_token = SafeString(required=True, validate=validate.Length(min=1, max=200))


class LogoutSchema(RefreshSchema):
    everywhere = JSONBoolean(
        load_default=False,
        metadata={"description": "End every session of this account, not only this one"},
    )


class ValidateSchema(Schema):
    json_schema_extra = {"oneOf": [{"required": ["token"]}, {"required": ["api_key"]}]}

    token = SafeString(validate=validate.Length(min=1, max=8192))
    api_key = SafeString(validate=validate.Length(min=1, max=200))

    @validates_schema
    def exactly_one(self, data, **kwargs):
        if ("token" in data) == ("api_key" in data):
            raise ValidationError("Give exactly one of token and api_key.", "_schema")


class UserSchema(Schema):
    id = fields.UUID()
    email = SafeString()
    name = SafeString(allow_none=True)
    is_active = fields.Boolean()
    is_admin = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class TokenPairSchema(Schema):
    access_token = SafeString()
    refresh_token = SafeString()
    token_type = SafeString(metadata={"example": "bearer"})
    expires_in = fields.Integer(metadata={"description": "Seconds the access token lives"})


class RegisteredSchema(TokenPairSchema):
    user = fields.Nested(UserSchema)


class ValidationResultSchema(Schema):
    valid = fields.Boolean()
    auth_type = SafeString(allow_none=True)
    user_id = fields.UUID(allow_none=True)
    scopes = fields.List(SafeString())
    expires_at = fields.DateTime(allow_none=True)
    reason = SafeString()


class MeSchema(UserSchema):
    auth_type = SafeString()
    scopes = fields.List(SafeString())
    key_id = fields.UUID(allow_none=True)


class KeySchema(Schema):
    id = fields.UUID()
    user_id = fields.UUID()
    name = SafeString()
    hint = SafeString(metadata={"example": "gaia_dev_...a1B2"})
    scopes = fields.List(SafeString())
    state = SafeString(metadata={"description": "active, expired or revoked"})
    rate_limit = SafeString(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    replaced_by_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()


class CreatedKeySchema(KeySchema):
    key = SafeString(metadata={"description": "The key itself: shown only in this response"})


class RotatedKeySchema(CreatedKeySchema):
    replaces = fields.UUID()
    old_key_expires_at = fields.DateTime(allow_none=True)


class KeyCreateSchema(Schema):
    name = SafeString(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(
        SafeString(validate=validate.OneOf(SCOPES)), validate=validate.Length(min=1, max=len(SCOPES))
    )
    expires_at = fields.AwareDateTime(
        default_timezone=timezone.utc, allow_none=True,
        metadata={"description": "In the future; null for a key that never expires. Required "
                                 "(a time or null) when the key is made with a signed-in session's "
                                 "token: a key outlives the session"},
    )
    rate_limit = SafeString(validate=validate.Regexp(RATE_PATTERN))


class KeyRotateSchema(Schema):
    grace_seconds = JSONInteger(validate=validate.Range(min=0, max=30 * 24 * 3600))


class PageQuerySchema(Schema):
    limit = fields.Integer(validate=validate.Range(min=1, max=200))
    cursor = cursor_field()


class KeyListQuerySchema(PageQuerySchema):
    user_id = fields.UUID()


class KeyListSchema(Schema):
    keys = fields.List(fields.Nested(KeySchema))
    next_cursor = SafeString(allow_none=True)


class UserListQuerySchema(PageQuerySchema):
    email = SafeString(validate=validate.Length(max=MAX_EMAIL_LENGTH))


class UserListSchema(Schema):
    users = fields.List(fields.Nested(UserSchema))
    next_cursor = SafeString(allow_none=True)


class UserCreateSchema(Schema):
    email = _email(required=True)
    name = SafeString(validate=validate.Length(max=200))
    password = _new_password()
    is_admin = JSONBoolean(load_default=False)


class UserUpdateSchema(Schema):
    name = SafeString(validate=validate.Length(max=200))
    password = _new_password()
    is_admin = JSONBoolean()
    is_active = JSONBoolean()
