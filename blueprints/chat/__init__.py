"""The chat service: providers and models, chat, personas and conversations, and the
OpenAI-compatible API under /v1."""

from blueprints.chat.embeddings_api import blp as embeddings_blp
from blueprints.chat.library_routes import blp as library_blp
from blueprints.chat.openai_api import blp as openai_blp
from blueprints.chat.routes import blp
from blueprints.chat.store import install_persona_cache


def register(app, api) -> None:
    install_persona_cache(app)
    api.register_blueprint(blp)
    api.register_blueprint(library_blp)
    api.register_blueprint(openai_blp)
    api.register_blueprint(embeddings_blp)
