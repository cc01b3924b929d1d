"""The auth service: accounts, logins and the API-key lifecycle over HTTP.

Its routes arrive with the auth service's issue; the shared credential checks it builds on
live in `gaia_app.security`.
"""


def register(app, api) -> None:
    return None
