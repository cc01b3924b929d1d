"""Personas: who sees which, who may change which, and which one a user talks to.

A persona with no owner is built in: every user sees it, only admins change it, and the
default one ("Mu", made by the first migration) is never deleted. Everything else belongs to
one user and is invisible to the others (their 404 is the same as a missing persona's).

A persona may declare actions: OpenAI function tools (checked as `/v1` checks `tools`) that
are offered to the model whenever it speaks, on the chat API and on `/v1` as
`persona:<name>`, after the request's own tools (the request's wins when both name a tool
alike).

Writes flush; the route commits. Every change queues a message that, once committed, drops
what each process cached of the owner's personas.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, or_

from blueprints.chat.openai_request import check_parameters
from gaia_app.errors import Conflict, Forbidden, InvalidField, NotFound, SchemaMissing
from gaia_app.extensions import db, first_or_404
from gaia_app.models import DEFAULT_PERSONA_ID, Persona, User, UserPersonaPreference, utcnow
from gaia_app.runtime.invalidation import queue_invalidation

MAX_OWN_PERSONAS = 100
EDITABLE_FIELDS = ("name", "description", "system_prompt", "traits", "actions")


# -- actions ------------------------------------------------------------------------------


def _as_actions(text: str) -> str:
    """A problem `check_parameters` found in `tools`, told of `actions`."""
    for said, meant in (("tools", "actions"), ("'tools'", "'actions'")):
        if text.startswith(said):
            return meant + text[len(said):]
    return text


def check_actions(actions: list) -> list:
    """Actions are tools: checked as `/v1` checks `tools` (a 422 naming the action)."""
    try:
        check_parameters({"tools": actions})
    except InvalidField as problem:
        raise InvalidField(_as_actions(problem.field or "tools"), _as_actions(problem.detail)) from None
    return actions


def _name_of(function: Any) -> str | None:
    name = function.get("name") if isinstance(function, Mapping) else None
    return name if isinstance(name, str) else None


def _tool_name(tool: Any) -> str | None:
    return _name_of(tool.get("function") if isinstance(tool, Mapping) else None)


def merged_tools(requested: Any, actions: Sequence[Mapping]) -> Any:
    """The request's tools, then the actions whose names they do not use; None when there are
    none. Tools that are not a list are left as they are, for the request's checks to name."""
    if not actions or (requested is not None and not isinstance(requested, list)):
        return requested
    taken = {_tool_name(tool) for tool in requested or ()}
    merged = [*(requested or ()), *(action for action in actions if _tool_name(action) not in taken)]
    return merged or None


def with_actions(body: dict, actions: Sequence[Mapping] | None) -> dict:
    """A Chat Completions request with a persona's actions added to its tools (or, when it
    declares the older `functions` and no tools, to those)."""
    if not actions:
        return body
    functions = body.get("functions")
    if body.get("tools") is None and isinstance(functions, list):
        taken = {_name_of(function) for function in functions}
        added = [action["function"] for action in actions if _tool_name(action) not in taken]
        return {**body, "functions": [*functions, *added]}
    return {**body, "tools": merged_tools(body.get("tools"), actions)}


# -- who sees which -----------------------------------------------------------------------


def _visible_to(user_id: uuid.UUID):
    return or_(Persona.owner_id.is_(None), Persona.owner_id == user_id)


def _same_name(a: str, b: str) -> bool:
    # casefold in Python rather than SQL lower(): SQLite's lower() only folds ASCII.
    return a.strip().casefold() == b.strip().casefold()


def _not_found(persona_id: Any) -> NotFound:
    return NotFound(f"No persona {persona_id} among those you can see.")


def visible_personas(user_id: uuid.UUID) -> list[Persona]:
    """The built-in personas (the default first), then the user's own, oldest first."""
    query = (
        db.select(Persona)
        .where(_visible_to(user_id))
        .order_by(
            case((Persona.owner_id.is_(None), 0), else_=1),
            Persona.is_default.desc(),
            Persona.created_at,
            Persona.id,
        )
    )
    return list(db.session.execute(query).scalars())


def get_visible_persona(user_id: uuid.UUID, persona_id: uuid.UUID | str) -> Persona:
    return first_or_404(lambda parsed: db.select(Persona).where(Persona.id == parsed, _visible_to(user_id)),
                        persona_id, _not_found(persona_id))[0]


def find_persona_by_name(user_id: uuid.UUID, name: str) -> Persona | None:
    """The persona called `name` (any case): the user's own before a built-in one."""
    rows = db.session.execute(
        db.select(Persona.id, Persona.name, Persona.owner_id).where(_visible_to(user_id))
    ).all()
    matches = [row for row in rows if _same_name(row.name, name)]
    if not matches:
        return None
    matches.sort(key=lambda row: row.owner_id is None)
    return db.session.get(Persona, matches[0].id)


def default_persona() -> Persona:
    persona = db.session.execute(
        db.select(Persona)
        .where(Persona.is_default.is_(True), Persona.owner_id.is_(None))
        .order_by(Persona.created_at, Persona.id)
        .limit(1)
    ).scalar_one_or_none()
    if persona is None:
        persona = db.session.get(Persona, DEFAULT_PERSONA_ID)
    if persona is None:
        raise SchemaMissing(
            "No default persona exists; run `flask --app wsgi db upgrade` against this database."
        )
    return persona


def _name_taken(owner_id: uuid.UUID | None, name: str, *, except_id: uuid.UUID | None = None) -> bool:
    owner_clause = Persona.owner_id.is_(None) if owner_id is None else Persona.owner_id == owner_id
    query = db.select(Persona.name).where(owner_clause)
    if except_id is not None:
        query = query.where(Persona.id != except_id)
    return any(_same_name(existing, name) for existing in db.session.execute(query).scalars())


def _forget_cached(owner_id: uuid.UUID | None) -> None:
    """After the commit, every process drops what it cached of this owner's personas (a
    built-in persona, owner None, concerns everyone)."""
    queue_invalidation(db.session, "personas", "*" if owner_id is None else str(owner_id))


def _lock_owner(user_id: uuid.UUID) -> None:
    """Serialise one user's persona writes (PostgreSQL), so the name and count checks hold."""
    db.session.execute(db.select(User.id).where(User.id == user_id).with_for_update())


def create_persona(
    user_id: uuid.UUID,
    *,
    name: str,
    system_prompt: str,
    description: str = "",
    traits: dict | None = None,
    actions: list | None = None,
) -> Persona:
    name = name.strip()
    if actions:
        check_actions(actions)
    _lock_owner(user_id)
    own_names = list(
        db.session.execute(db.select(Persona.name).where(Persona.owner_id == user_id)).scalars()
    )
    taken = next((existing for existing in own_names if _same_name(existing, name)), None)
    if taken is not None:
        raise Conflict(f"You already have a persona named '{taken}' (names ignore case).")
    if len(own_names) >= MAX_OWN_PERSONAS:
        raise Conflict(
            f"You have {MAX_OWN_PERSONAS} personas, the most one account may keep; "
            "delete one before making another."
        )
    persona = Persona(
        owner_id=user_id,
        name=name,
        description=description or "",
        system_prompt=system_prompt,
        traits=traits or {},
        actions=actions or None,
        is_default=False,
    )
    db.session.add(persona)
    _forget_cached(user_id)
    db.session.flush()
    return persona


def _editable(user_id: uuid.UUID, persona_id: uuid.UUID | str, is_admin: bool, verb: str) -> Persona:
    persona = get_visible_persona(user_id, persona_id)
    if persona.owner_id is None and not is_admin:
        raise Forbidden(
            f"'{persona.name}' is a built-in persona: only an admin can {verb} it. "
            "Make your own persona instead (POST /api/v0.2/personas)."
        )
    return persona


def update_persona(
    user_id: uuid.UUID, persona_id: uuid.UUID | str, changes: dict, *, is_admin: bool = False
) -> Persona:
    """Change any of EDITABLE_FIELDS; built-in personas only for admins."""
    if changes.get("actions"):
        check_actions(changes["actions"])
    persona = _editable(user_id, persona_id, is_admin, "change")
    if persona.owner_id is not None:
        _lock_owner(persona.owner_id)
    if "name" in changes:
        name = changes["name"].strip()
        if _name_taken(persona.owner_id, name, except_id=persona.id):
            whose = "a built-in persona" if persona.owner_id is None else "another of your personas"
            raise Conflict(f"The name '{name}' is already used by {whose}.")
        persona.name = name
    for field in ("description", "system_prompt"):
        if field in changes:
            setattr(persona, field, changes[field] or "")
    if "traits" in changes:
        persona.traits = dict(changes["traits"] or {})
    if "actions" in changes:
        persona.actions = list(changes["actions"] or ()) or None
    persona.updated_at = utcnow()
    _forget_cached(persona.owner_id)
    db.session.flush()
    return persona


def delete_persona(user_id: uuid.UUID, persona_id: uuid.UUID | str, *, is_admin: bool = False) -> None:
    """Delete a persona. Users who preferred it fall back to the default (FK cascade);
    conversations started with it keep their messages (their persona_id becomes NULL)."""
    persona = _editable(user_id, persona_id, is_admin, "delete")
    if persona.owner_id is None and (persona.is_default or persona.id == DEFAULT_PERSONA_ID):
        raise Conflict(f"'{persona.name}' is the default persona and cannot be deleted.")
    db.session.delete(persona)
    _forget_cached(persona.owner_id)
    db.session.flush()


def current_persona(user_id: uuid.UUID) -> tuple[Persona, str]:
    """The persona the user talks to, and why: ("preference" | "default")."""
    preferred = db.session.execute(
        db.select(Persona)
        .join(UserPersonaPreference, UserPersonaPreference.persona_id == Persona.id)
        .where(UserPersonaPreference.user_id == user_id, _visible_to(user_id))
    ).scalar_one_or_none()
    if preferred is not None:
        return preferred, "preference"
    return default_persona(), "default"


def set_current_persona(user_id: uuid.UUID, persona_id: uuid.UUID | str) -> tuple[Persona, str]:
    persona = get_visible_persona(user_id, persona_id)
    values = {"user_id": user_id, "persona_id": persona.id, "updated_at": utcnow()}
    # One statement, so two concurrent choices cannot collide on the primary key.
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(UserPersonaPreference).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[UserPersonaPreference.user_id],
        set_={"persona_id": statement.excluded.persona_id, "updated_at": statement.excluded.updated_at},
    )
    db.session.execute(statement)
    _forget_cached(user_id)
    db.session.flush()
    return persona, "preference"
