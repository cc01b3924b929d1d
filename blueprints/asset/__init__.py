"""The asset service: generation jobs (made, followed, cancelled) and the stored files they
make (listed, downloaded, deleted)."""

from blueprints.asset.assets import install_session_hooks
from blueprints.asset.routes import blp


def register(app, api) -> None:
    install_session_hooks()
    api.register_blueprint(blp)
