"""The gateway's own route: what this deployment serves, and where to read about it."""

from gaia_app.blueprint import Blueprint
from gaia_app.constants import API_PREFIX
from gaia_app.state import gaia

blp = Blueprint("gateway", __name__, description="Entry point")


@blp.route("/")
@blp.doc(summary="What this deployment serves, and where to read about it", responses={"200": {
    "description": "The deployment",
    "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["name", "environment", "version", "services", "links"],
        "properties": {
            "name": {"type": "string"},
            "environment": {"type": "string"},
            "version": {"type": "string"},
            "services": {"type": "array", "items": {"type": "string"}},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }}},
}})
def index():
    settings = gaia().settings
    return {
        "name": "Gaia",
        "environment": settings.environment,
        "version": settings.build_id,
        "services": list(settings.services),
        "links": {
            "health": "/health",
            "openapi": f"{API_PREFIX}/openapi.json",
            "docs": "/docs",
        },
    }
