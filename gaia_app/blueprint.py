"""The Blueprint every service's routes use: flask-smorest's, with request bodies read
through `json_body` (bounded depth, finite numbers, storable text) instead of a bare
`json.loads`."""

from __future__ import annotations

from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from gaia_app import json_body


class BodyParser(FlaskParser):
    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        # An empty body raises JSONDecodeError with an empty document: webargs reads "missing".
        return json_body.loads(req.get_data(cache=True))


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = BodyParser()
