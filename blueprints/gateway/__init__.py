"""The gateway: the entry point clients call; in split mode it forwards to the other services."""

from blueprints.gateway.forwarding import register_forwarding
from blueprints.gateway.routes import blp
from gaia_app.state import gaia


def register(app, api) -> None:
    api.register_blueprint(blp)
    register_forwarding(app, gaia(app).settings)
