"""JSON Web Tokens: the ones Gaia issues, and the ones it accepts from other issuers.

Three kinds of issuer, each with its own fixed algorithm list:
- Gaia itself: HS256 signed with GAIA_SECRET_KEY, `iss` = "gaia:<environment>", `aud` = "gaia";
- Supabase: HS256 signed with SUPABASE_JWT_SECRET, `aud` = "authenticated", user id in `sub`;
- an external identity provider: RS256/ES256 keys from JWT_JWKS_URL, with JWT_ISSUER and
  JWT_AUDIENCE. Keys are cached; an unknown `kid` triggers a refresh (at most one every few
  seconds), and a JWKS outage keeps the keys already known working.
`exp` is required everywhere; a small leeway absorbs clock skew.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import requests

from gaia_app.errors import Unauthenticated
from gaia_app.runtime.clock import Clock

if TYPE_CHECKING:
    import jwt

    from gaia_app.config import Settings

log = logging.getLogger("gaia.jwt")


def _pyjwt():
    """PyJWT, imported on the first token. It loads `cryptography` (about 8 MiB a worker,
    needed only for RS256/ES256 keys), which a worker that only ever sees API keys is spared."""
    import jwt

    return jwt

GAIA_AUDIENCE = "gaia"
SUPABASE_AUDIENCE = "authenticated"
GAIA_ALGORITHMS = ["HS256"]
SUPABASE_ALGORITHMS = ["HS256"]
JWKS_ALGORITHMS = ["RS256", "ES256"]
LEEWAY_SECONDS = 10
MAX_TOKEN_LENGTH = 8192


class TokenError(Unauthenticated):
    """The token is not acceptable; the message is safe to show to the client."""


@dataclass(frozen=True)
class VerifiedToken:
    issuer_kind: str  # "gaia", "supabase" or "jwks"
    subject: str
    expires_at: datetime
    email: str | None = None
    scopes: frozenset[str] | None = None

    @property
    def external_subject(self) -> str:
        return f"{self.issuer_kind}|{self.subject}"


def gaia_issuer(settings: Settings) -> str:
    return f"gaia:{settings.environment}"


def issue_access_token(
    settings: Settings, user_id: uuid.UUID, scopes, now: datetime | None = None
) -> tuple[str, int]:
    jwt = _pyjwt()
    now = now or datetime.now(timezone.utc)
    ttl = settings.access_token_ttl
    claims = {
        "iss": gaia_issuer(settings),
        "aud": GAIA_AUDIENCE,
        "sub": str(user_id),
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl),
        "jti": secrets.token_urlsafe(12),
        "scope": " ".join(sorted(scopes)),
    }
    return jwt.encode(claims, settings.secret_key, algorithm="HS256"), ttl


class JWKSCache:
    """Signing keys of one JWKS URL, by `kid`."""

    def __init__(self, url: str, *, clock: Clock, max_age: float = 600.0, min_refresh_interval: float = 5.0):
        self._clock = clock
        self.url = url
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._attempted_at = 0.0
        self._lock = threading.Lock()
        self._session = requests.Session()

    def key(self, kid: str | None) -> jwt.PyJWK:
        stale = self._clock.monotonic() - self._fetched_at > self.max_age
        if kid not in self._keys or stale:
            self._refresh()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        found = self._keys.get(kid)  # type: ignore[arg-type]
        if found is None:
            raise TokenError("The token was signed with an unknown key.")
        return found

    def _refresh(self) -> None:
        jwt = _pyjwt()
        with self._lock:
            now = self._clock.monotonic()
            if now - self._attempted_at < self.min_refresh_interval:
                return
            self._attempted_at = now
            try:
                response = self._session.get(self.url, timeout=(2, 3))
                response.raise_for_status()
                document = response.json()
                if not isinstance(document, dict):
                    raise ValueError("the JWKS document is not a JSON object")
                key_set = jwt.PyJWKSet.from_dict(document)
            except (requests.RequestException, ValueError, TypeError, jwt.PyJWTError) as exc:
                # Keep what we have: tokens signed with known keys go on working.
                log.warning("JWKS refresh from %s failed: %s", self.url, exc)
                return
            self._keys = {k.key_id: k for k in key_set.keys if k.key_id}
            if not self._keys and key_set.keys:
                self._keys = {None: key_set.keys[0]}  # type: ignore[dict-item]
            self._fetched_at = now


class TokenVerifier:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.jwks = JWKSCache(settings.jwks_url, clock=clock) if settings.jwks_url else None

    def verify(self, token: str) -> VerifiedToken:
        jwt = _pyjwt()
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("The token is too long.")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenError("The token is not a well-formed JWT.") from None
        algorithm = header.get("alg")
        issuer = unverified.get("iss")

        if issuer == gaia_issuer(self.settings):
            claims = self._decode(
                token, self.settings.secret_key, GAIA_ALGORITHMS, algorithm,
                audience=GAIA_AUDIENCE, issuer=issuer,
            )
            scopes = frozenset(str(claims.get("scope", "")).split())
            return self._verified("gaia", claims, scopes=scopes)
        if self.jwks is not None and issuer == self.settings.jwt_issuer:
            if algorithm not in JWKS_ALGORITHMS:
                raise TokenError(f"Tokens of this issuer must use {' or '.join(JWKS_ALGORITHMS)}.")
            signing_key = self.jwks.key(header.get("kid"))
            claims = self._decode(
                token, signing_key, JWKS_ALGORITHMS, algorithm,
                audience=self.settings.jwt_audience, issuer=self.settings.jwt_issuer,
            )
            return self._verified("jwks", claims)
        if self.settings.supabase_jwt_secret:
            claims = self._decode(
                token, self.settings.supabase_jwt_secret, SUPABASE_ALGORITHMS, algorithm,
                audience=SUPABASE_AUDIENCE, issuer=None,
            )
            return self._verified("supabase", claims)
        raise TokenError("Tokens from this issuer are not accepted.")

    def _decode(self, token, key, algorithms, algorithm, *, audience, issuer) -> dict:
        jwt = _pyjwt()
        if algorithm not in algorithms:
            raise TokenError(f"The token's algorithm must be {' or '.join(algorithms)}.")
        required = ["exp", "sub", "aud"] + (["iss"] if issuer else [])
        try:
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("The token is not valid yet.") from None
        except jwt.InvalidAudienceError:
            raise TokenError("The token is not meant for this service (audience).") from None
        except jwt.InvalidIssuerError:
            raise TokenError("The token's issuer is not accepted.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"The token lacks the '{exc.claim}' claim.") from None
        except jwt.InvalidSignatureError:
            raise TokenError("The token's signature does not verify.") from None
        except jwt.PyJWTError:
            raise TokenError("The token is invalid.") from None

    @staticmethod
    def _verified(kind: str, claims: dict, scopes: frozenset[str] | None = None) -> VerifiedToken:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise TokenError("The token's subject is invalid.")
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        try:
            expires_at = datetime.fromtimestamp(int(claims["exp"]), timezone.utc)
        except (OverflowError, OSError, ValueError, TypeError):
            raise TokenError("The token's expiry is out of range.") from None
        return VerifiedToken(
            issuer_kind=kind,
            subject=subject,
            expires_at=expires_at,
            email=email,
            scopes=scopes,
        )
