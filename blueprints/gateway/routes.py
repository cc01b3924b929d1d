from flask import current_app
from flask_smorest import Blueprint

from gaia_app import API_PREFIX

blp = Blueprint("gateway", __name__, description="Entry point")


@blp.route("/")
@blp.doc(summary="What this deployment serves, and where to read about it")
def index():
    settings = current_app.extensions["gaia"].settings
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
