"""The Blueprint every service's routes use: flask-smorest's, with request bodies read
through `json_body` (bounded depth, finite numbers, storable text) instead of a bare
`json.loads`.

A route that takes a JSON body needs one: another content type is 415 (as under `/v1`), and an
empty body 400 (send `{}` when no field is needed), rather than reading either as "no fields".
"""

from __future__ import annotations

import json

from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import UnsupportedMediaType

from gaia_app import json_body
from gaia_app.errors import InvalidRequest


class BodyParser(FlaskParser):
    def load_json(self, req, schema):
        if not is_json_request(req):
            raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")
        data = req.get_data(cache=True)
        if not data.strip():
            raise InvalidRequest("The request body is empty; send a JSON object ({} when no field is needed).")
        try:
            return json_body.loads(data)
        except json.JSONDecodeError as exc:
            return self._handle_invalid_json_error(exc, req)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = BodyParser()
