"""The chat service: providers and models (and, later, chat, personas and conversations)."""

from blueprints.chat.routes import blp


def register(app, api) -> None:
    api.register_blueprint(blp)
