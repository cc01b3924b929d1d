"""The auth service: accounts, sign-in sessions (JWT), the API-key lifecycle, admin users.

The credential checks every service shares live in `gaia_app.security`.
"""

from blueprints.auth.routes import blp


def register(app, api) -> None:
    api.register_blueprint(blp)
