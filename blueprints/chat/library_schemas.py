"""Request and response bodies of the personas and conversations endpoints."""

import json
from collections.abc import Mapping

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema

from blueprints.chat.conversations import DEFAULT_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT
from blueprints.chat.openai_request import MAX_TOOLS
from blueprints.chat.schemas import ToolCallSchema
from gaia_app.schemas import NOT_BLANK, SafeString, cursor_field

MAX_TRAITS = 32
MAX_TRAITS_BYTES = 8 * 1024
MAX_ACTIONS_BYTES = 64 * 1024


class StrippedString(fields.String):
    """A string with surrounding whitespace removed before it is validated."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


def _has_text(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


def _traits_fit(traits: dict) -> None:
    if len(traits) > MAX_TRAITS:
        raise ValidationError(f"At most {MAX_TRAITS} traits.")
    size = len(json.dumps(traits, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_TRAITS_BYTES:
        raise ValidationError(f"Traits take {size} bytes as JSON; at most {MAX_TRAITS_BYTES}.")


def _actions_fit(actions: list) -> None:
    size = len(json.dumps(actions, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_ACTIONS_BYTES:
        raise ValidationError(f"Actions take {size} bytes as JSON; at most {MAX_ACTIONS_BYTES}.")


# -- personas ---------------------------------------------------------------------------


def _name(**kwargs) -> fields.Field:
    return StrippedString(validate=validate.Length(min=1, max=100), metadata=NOT_BLANK, **kwargs)


def _system_prompt(**kwargs) -> fields.Field:
    return SafeString(validate=[validate.Length(min=1, max=16000), _has_text], metadata=NOT_BLANK, **kwargs)


def _traits() -> fields.Field:
    return fields.Dict(
        keys=SafeString(validate=validate.Length(min=1, max=100)),
        values=fields.Raw(allow_none=True),
        validate=_traits_fit,
        metadata={"description": f"A JSON object: at most {MAX_TRAITS} keys and 8 KiB"},
    )


def _actions() -> fields.Field:
    return fields.List(
        fields.Dict(),
        validate=[validate.Length(max=MAX_TOOLS), _actions_fit],
        metadata={"description": (
            "OpenAI function tools (`{\"type\": \"function\", \"function\": {\"name\", "
            "\"description\", \"parameters\"}}`) offered to the model whenever this persona "
            f"speaks, after a request's own tools. At most {MAX_TOOLS}, 64 KiB as JSON."
        )},
    )


class PersonaCreateSchema(Schema):
    name = _name(required=True)
    description = SafeString(validate=validate.Length(max=2000))
    system_prompt = _system_prompt(required=True)
    traits = _traits()
    actions = _actions()


class PersonaUpdateSchema(Schema):
    """Any of the fields of PersonaCreateSchema, at least one."""

    name = _name()
    description = SafeString(validate=validate.Length(max=2000))
    system_prompt = _system_prompt()
    traits = _traits()
    actions = _actions()

    @validates_schema
    def something_to_change(self, data, **kwargs):
        if not data:
            raise ValidationError(
                "Give at least one of name, description, system_prompt, traits, actions.", "_schema"
            )


class PersonaSchema(Schema):
    id = fields.UUID()
    name = SafeString()
    description = SafeString()
    system_prompt = SafeString()
    traits = fields.Dict()
    actions = fields.List(fields.Dict(), metadata={"description": "Its tools, offered whenever it speaks"})
    is_default = fields.Boolean()
    built_in = fields.Boolean(metadata={"description": "Built in (no owner): every user sees it"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def add_built_in(self, persona, **kwargs):
        if isinstance(persona, Mapping):
            return persona
        view = {name: getattr(persona, name) for name in self.fields if name != "built_in"}
        view["built_in"] = persona.owner_id is None
        view["actions"] = persona.actions or []
        return view


class PersonaListSchema(Schema):
    personas = fields.List(fields.Nested(PersonaSchema))
    total = fields.Integer()


class CurrentPersonaSchema(Schema):
    persona = fields.Nested(PersonaSchema)
    source = SafeString(metadata={"description": "preference or default"})


class SetPersonaSchema(Schema):
    persona_id = fields.UUID(required=True)


# -- conversations ----------------------------------------------------------------------


class ConversationListQuerySchema(Schema):
    limit = fields.Integer(validate=validate.Range(min=1, max=200))
    cursor = cursor_field()


class ConversationCreateSchema(Schema):
    title = StrippedString(validate=validate.Length(max=200))
    persona_id = fields.UUID(
        allow_none=True, metadata={"description": "Default: your current persona"}
    )


class ConversationQuerySchema(Schema):
    limit = fields.Integer(
        load_default=DEFAULT_MESSAGE_LIMIT,
        validate=validate.Range(min=1, max=MAX_MESSAGE_LIMIT),
        metadata={"description": "How many of the latest messages"},
    )


class ConversationSchema(Schema):
    id = fields.UUID()
    title = SafeString()
    persona_id = fields.UUID(allow_none=True)
    model = SafeString(allow_none=True, metadata={"description": "<provider>/<model> that answered last"})
    message_count = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ConversationListSchema(Schema):
    conversations = fields.List(fields.Nested(ConversationSchema))
    next_cursor = SafeString(allow_none=True)


class UsageSchema(Schema):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class MessageSchema(Schema):
    id = fields.UUID()
    role = SafeString(metadata={"description": "user, assistant or tool"})
    content = SafeString()
    provider = SafeString(allow_none=True)
    model = SafeString(allow_none=True)
    usage = fields.Nested(UsageSchema, allow_none=True)
    tool_calls = fields.List(fields.Nested(ToolCallSchema),
                             metadata={"description": "An answer that called tools: the calls"})
    tool_call_id = SafeString(metadata={"description": "A tool result: the call it answers"})
    created_at = fields.DateTime()

    @pre_dump
    def add_usage(self, message, **kwargs):
        if isinstance(message, Mapping):
            return message
        view = {name: getattr(message, name) for name in self.fields if name != "usage"}
        # Only on the messages they concern.
        for name in ("tool_calls", "tool_call_id"):
            if view[name] is None:
                del view[name]
        view["usage"] = None
        if message.prompt_tokens is not None or message.completion_tokens is not None:
            prompt, completion = message.prompt_tokens or 0, message.completion_tokens or 0
            view["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return view


class ConversationDetailSchema(ConversationSchema):
    messages = fields.List(fields.Nested(MessageSchema))
    has_more = fields.Boolean(metadata={"description": "Older messages exist beyond `limit`"})
