"""The auth service: accounts, sign-in sessions (JWT), the API-key lifecycle, admin users.

The credential checks every service shares live in `gaia_app.identity`; the user and key
rules the CLI shares, in `gaia_app.accounts`.
"""

from blueprints.auth.routes import blp


def register(app, api) -> None:
    api.register_blueprint(blp)
