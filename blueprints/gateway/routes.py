"""The gateway's own route: what this deployment serves, and where to read about it."""

from gaia_app.blueprint import Blueprint
from gaia_app.constants import API_PREFIX
from gaia_app.state import gaia

blp = Blueprint("gateway", __name__, description="Entry point")


@blp.route("/")
@blp.doc(summary="What this deployment serves, and where to read about it")
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
