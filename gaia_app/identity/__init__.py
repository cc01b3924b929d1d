"""Who is calling: scopes, the API-key format, passwords, JWTs, the credential cache, the
`Authenticator`, accounts for external issuers, and the `require_auth` decorator.

Services import what they need from here:

    from gaia_app.identity import Principal, current_principal, require_auth

Dependencies point one way: `scopes` has none; nothing in this package imports
`gaia_app.accounts` (the user and key rules, which build on this package) or a blueprint.
"""

from gaia_app.identity.decorator import current_principal, require_auth
from gaia_app.identity.principal import Principal

__all__ = ["Principal", "current_principal", "require_auth"]
