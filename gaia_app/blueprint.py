"""The Blueprint every service's routes use, and what the OpenAPI document says of them.

- Request bodies are read through `json_body` (bounded depth, finite numbers, storable text)
  instead of a bare `json.loads`. A route that takes a JSON body needs one: another content
  type is 415 (as under `/v1`), and an empty body 400 (send `{}` when no field is needed).
- Every operation gets a stable `operationId`, `<blueprint>.<view function>`, so that
  generated clients keep their method names.
- `WireDocumentation` makes the document describe the wire: every error answer is
  `application/problem+json` with the `Problem` schema, and under `/v1` `application/json`
  with OpenAI's error object, whatever the library documents by default.
"""

from __future__ import annotations

import json

from http import HTTPStatus

from apispec import BasePlugin
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import UnsupportedMediaType

from gaia_app import json_body
from gaia_app.errors import OPENAI_PREFIX, PROBLEM_MIMETYPE, InvalidRequest


class BodyParser(FlaskParser):
    def load_json(self, req, schema):
        if not is_json_request(req):
            raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")
        data = json_body.request_body(req)
        if not data.strip():
            raise InvalidRequest("The request body is empty; send a JSON object ({} when no field is needed).")
        try:
            return json_body.loads(data)
        except json.JSONDecodeError as exc:
            return self._handle_invalid_json_error(exc, req)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = BodyParser()

    def route(self, rule, *, parameters=None, tags=None, **options):
        register = super().route(rule, parameters=parameters, tags=tags, **options)

        def decorator(view):
            named = getattr(view, "_apidoc", {}).get("manual_doc", {}).get("operationId")
            if not named:
                view = self.doc(operationId=f"{self.name}.{view.__name__}")(view)
            return register(view)

        return decorator


class WireDocumentation(BasePlugin):
    """Error answers as they are served: problem+json, or OpenAI's shape under /v1; and the
    rules a schema enforces across fields (`json_schema_extra`, such as "exactly one of")."""

    def schema_helper(self, name, definition, schema=None, **kwargs):
        extra = getattr(schema, "json_schema_extra", None)
        return dict(extra) if extra else None

    def operation_helper(self, path=None, operations=None, **kwargs):
        openai = path == OPENAI_PREFIX or (path or "").startswith(OPENAI_PREFIX + "/")
        mimetype, schema = ("application/json", "OpenAIError") if openai else (PROBLEM_MIMETYPE, "Problem")
        for operation in (operations or {}).values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("default", {})
            if "requestBody" in operation or openai:
                for status, meaning in _BODY_ANSWERS.items():
                    responses.setdefault(status, {"description": meaning})
            if "{" in (path or ""):
                responses.setdefault("404", {"description": "No such object, or not one of yours"})
            for status, response in list(responses.items()):
                if status != "default" and not str(status).startswith(("4", "5")):
                    continue
                responses[status] = {
                    "description": _description(status, response),
                    "content": {mimetype: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
                }


# What any operation that reads a body may answer before its own rules run.
_BODY_ANSWERS = {
    "400": "The body is not JSON, is empty, nests too deeply or holds a non-finite number",
    "413": "The body is larger than MAX_CONTENT_LENGTH",
    "415": "The body is not JSON (Content-Type)",
}


def _description(status, response) -> str:
    if isinstance(response, dict) and response.get("description"):
        return response["description"]
    if status == "default":
        return "An error"
    return HTTPStatus(int(status)).phrase
