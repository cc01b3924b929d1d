"""The gateway: the entry point clients call (an index of what this deployment serves)."""

from blueprints.gateway.routes import blp


def register(app, api) -> None:
    api.register_blueprint(blp)
