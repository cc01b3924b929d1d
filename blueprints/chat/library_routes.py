"""Routes of the chat service's library: personas and stored conversations."""

from __future__ import annotations

from flask import url_for

from blueprints.chat import conversations, personas
from blueprints.chat.library_schemas import (
    ConversationCreateSchema,
    ConversationDetailSchema,
    ConversationListQuerySchema,
    ConversationListSchema,
    ConversationQuerySchema,
    ConversationSchema,
    CurrentPersonaSchema,
    PersonaCreateSchema,
    PersonaListSchema,
    PersonaSchema,
    PersonaUpdateSchema,
    SetPersonaSchema,
)
from gaia_app.blueprint import Blueprint
from gaia_app.constants import API_PREFIX
from gaia_app.extensions import commits
from gaia_app.identity import current_principal, require_auth

blp = Blueprint("chat_library", __name__, url_prefix=API_PREFIX, description="Personas and conversations")

CONVERSATION_FIELDS = tuple(ConversationSchema().fields)


def _manages_built_ins() -> bool:
    # The admin scope, not only the admin account: an admin's chat-only key stays a chat key.
    return current_principal().allows("admin")


# -- personas ---------------------------------------------------------------------------


@blp.route("/personas")
@require_auth("chat")
@blp.response(200, PersonaListSchema)
def list_personas():
    """The built-in personas, then yours (oldest first)."""
    found = personas.visible_personas(current_principal().user_id)
    return {"personas": found, "total": len(found)}


@blp.route("/personas", methods=["POST"])
@require_auth("chat")
@blp.arguments(PersonaCreateSchema())
@blp.response(201, PersonaSchema)
@commits
def create_persona(body):
    """Make a persona of your own; names are unique among yours, whatever their case.

    Its `actions` (OpenAI function tools) are offered to the model whenever it speaks."""
    persona = personas.create_persona(current_principal().user_id, **body)
    return persona, 201, {"Location": url_for(".get_persona", persona_id=persona.id)}


@blp.route("/personas/current")
@require_auth("chat")
@blp.response(200, CurrentPersonaSchema)
def get_current_persona():
    """The persona you talk to when a request names none: your choice, else the default."""
    persona, source = personas.current_persona(current_principal().user_id)
    return {"persona": persona, "source": source}


@blp.route("/personas/set", methods=["POST"])
@require_auth("chat")
@blp.arguments(SetPersonaSchema())
@blp.response(200, CurrentPersonaSchema)
@commits
def set_current_persona(body):
    """Choose the persona you talk to by default (a built-in one or one of yours)."""
    persona, source = personas.set_current_persona(current_principal().user_id, body["persona_id"])
    return {"persona": persona, "source": source}


@blp.route("/personas/<uuid:persona_id>")
@require_auth("chat")
@blp.response(200, PersonaSchema)
def get_persona(persona_id):
    """A built-in persona or one of yours."""
    return personas.get_visible_persona(current_principal().user_id, persona_id)


@blp.route("/personas/<uuid:persona_id>", methods=["PUT"])
@require_auth("chat")
@blp.arguments(PersonaUpdateSchema())
@blp.response(200, PersonaSchema)
@commits
def update_persona(body, persona_id):
    """Change any of name, description, system_prompt, traits, actions. Built-in ones: admins only."""
    return personas.update_persona(
        current_principal().user_id, persona_id, body, is_admin=_manages_built_ins()
    )


@blp.route("/personas/<uuid:persona_id>", methods=["DELETE"])
@require_auth("chat")
@blp.response(204)
@commits
def delete_persona(persona_id):
    """Delete one of your personas (built-in ones: admins only; never the default)."""
    personas.delete_persona(current_principal().user_id, persona_id, is_admin=_manages_built_ins())


# -- conversations ----------------------------------------------------------------------


@blp.route("/conversations")
@require_auth("chat")
@blp.arguments(ConversationListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, ConversationListSchema)
def list_conversations(limit=None, cursor=None):
    """Your conversations, newest first."""
    rows, next_cursor = conversations.list_conversations(current_principal().user_id, limit, cursor)
    return {"conversations": rows, "next_cursor": next_cursor}


@blp.route("/conversations", methods=["POST"])
@require_auth("chat")
@blp.arguments(ConversationCreateSchema())
@blp.response(201, ConversationSchema)
@commits
def create_conversation(body):
    """Start an empty conversation, with the named persona or your current one."""
    conversation = conversations.create_conversation(
        current_principal().user_id, body.get("title"), body.get("persona_id")
    )
    return conversation, 201, {
        "Location": url_for(".get_conversation", conversation_id=conversation.id)
    }


@blp.route("/conversations/<uuid:conversation_id>")
@require_auth("chat")
@blp.arguments(ConversationQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, ConversationDetailSchema)
def get_conversation(conversation_id, limit):
    """One of your conversations with its latest `limit` messages, oldest of them first."""
    conversation = conversations.get_conversation(current_principal().user_id, conversation_id)
    messages, has_more = conversations.conversation_messages(conversation, limit)
    view = {field: getattr(conversation, field) for field in CONVERSATION_FIELDS}
    return {**view, "messages": messages, "has_more": has_more}


@blp.route("/conversations/<uuid:conversation_id>", methods=["DELETE"])
@require_auth("chat")
@blp.response(204)
@commits
def delete_conversation(conversation_id):
    """Delete one of your conversations and its messages."""
    conversations.delete_conversation(current_principal().user_id, conversation_id)
