"""JSON Web Tokens through HTTP: Gaia's own, Supabase's, and an external JWKS issuer's.

Every refusal must be a 401 (or 422) problem+json with a `detail`, and must not leak a
secret, a key or a stack trace. Runs on SQLite and PostgreSQL (through `app`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import text

from gaia_app import accounts
from gaia_app.extensions import db
from gaia_app.identity.tokens import issue_access_token
from gaia_app.state import gaia
from tests.conftest import make_app

ME = "/api/v0.2/auth/me"
MODELS = "/api/v0.2/models"
REGISTER = "/api/v0.2/auth/register"
VALIDATE = "/api/v0.2/auth/validate"

GAIA_ISSUER = "gaia:local"
SUPABASE_SECRET = "s" * 40
OTHER_SECRET = "o" * 48
IDP_ISSUER = "https://idp.example.test/"
IDP_AUDIENCE = "gaia-api"
LEEWAY = 10

# Auth endpoints are rate limited per client address; each call gets its own address so
# that this file never trips (nor is tripped by) another file's counters.
_addresses = itertools.count(1)


def _remote() -> dict:
    n = next(_addresses)
    return {"REMOTE_ADDR": f"127.77.{(n >> 8) & 255}.{n & 255}"}


# -- helpers ----------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def now() -> int:
    return int(time.time())


def _leak_markers(app) -> list[str]:
    settings = gaia(app).settings
    markers = [settings.secret_key, SUPABASE_SECRET, OTHER_SECRET]
    return [m for m in markers if m]


def assert_no_leak(response, app, *extra: str) -> None:
    body = response.get_data(as_text=True)
    for marker in [*_leak_markers(app), *extra]:
        assert marker not in body, f"response leaks {marker[:12]}...: {body}"
    for stack_sign in ("Traceback", 'File "', "site-packages", "jwt.exceptions", "PyJWT"):
        assert stack_sign not in body, body


def problem_of(response, status, app, *extra_secrets: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    assert_no_leak(response, app, *extra_secrets)
    return body


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def refused(client, app, token: str, *extra_secrets: str, path: str = ME) -> dict:
    """The token is refused with a 401 problem and a Bearer challenge, leaking nothing."""
    response = client.get(path, headers=bearer(token))
    body = problem_of(response, 401, app, *extra_secrets)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Part of a refused token's signature is never echoed back either.
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 16:
        assert signature not in response.get_data(as_text=True)
    return body


def gaia_claims(user_id, **overrides) -> dict:
    claims = {
        "iss": GAIA_ISSUER,
        "aud": "gaia",
        "sub": str(user_id),
        "iat": now(),
        "nbf": now(),
        "exp": now() + 600,
        "jti": uuid.uuid4().hex,
        "scope": "assets chat",
    }
    for name, value in overrides.items():
        if value is ...:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def gaia_token(app, user_id, *, secret: str | None = None, **overrides) -> str:
    key = secret or gaia(app).settings.secret_key
    return jwt.encode(gaia_claims(user_id, **overrides), key, algorithm="HS256")


def user_count(app) -> int:
    with app.app_context():
        return db.session.execute(text("SELECT COUNT(*) FROM users")).scalar()


def users_by_subject(app, subject: str) -> list:
    with app.app_context():
        return db.session.execute(
            text("SELECT id, email, external_subject FROM users WHERE external_subject = :s"),
            {"s": subject},
        ).mappings().all()


def clear_cache(app) -> None:
    gaia(app).authenticator.cache.clear()


# -- 1. Gaia's own tokens -----------------------------------------------------------------


def test_registered_token_works_on_me_and_models(app, client):
    response = client.post(
        REGISTER,
        json={"email": "jwt-reg@example.com", "password": "correct horse battery staple 42"},
        environ_base=_remote(),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    registered = response.get_json()
    token = registered["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims["iss"] == GAIA_ISSUER and claims["aud"] == "gaia"
    assert claims["sub"] == registered["user"]["id"]

    me = client.get(ME, headers=bearer(token))
    assert me.status_code == 200, me.get_data(as_text=True)
    body = me.get_json()
    assert body["auth_type"] == "jwt"
    assert body["id"] == registered["user"]["id"]
    assert body["email"] == "jwt-reg@example.com"
    assert body["key_id"] is None
    assert client.get(MODELS, headers=bearer(token)).status_code == 200


def test_issued_token_of_a_plain_user_works(app, client, make):
    user_id = make.user("plain@example.com")
    with app.app_context():
        token, ttl = issue_access_token(gaia(app).settings, user_id, ["chat", "assets"])
    assert ttl > 0
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json()["id"] == str(user_id)
    assert set(response.get_json()["scopes"]) == {"chat", "assets"}


def test_a_scope_claim_cannot_grant_admin_to_a_non_admin(app, client, make):
    user_id = make.user("wannabe@example.com")
    token = gaia_token(app, user_id, scope="admin assets chat")
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 200
    assert "admin" not in response.get_json()["scopes"]
    assert response.get_json()["is_admin"] is False


def test_tampered_payload_is_401(app, client, make):
    victim = make.user("victim@example.com", admin=True)
    attacker = make.user("attacker@example.com")
    token = gaia_token(app, attacker)
    assert client.get(ME, headers=bearer(token)).status_code == 200
    header, _, signature = token.split(".")
    forged = f"{header}.{b64json(gaia_claims(victim, scope='admin assets chat'))}.{signature}"
    body = refused(client, app, forged)
    assert "signature" in body["detail"]
    # A claim changed on the same token (longer life) is refused as well.
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = claims["exp"] + 3600
    refused(client, app, f"{header}.{b64json(claims)}.{signature}")
    refused(client, app, forged, path=MODELS)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "None", "typ": "JWT"},
        {"alg": "NONE", "typ": "JWT"},
    ],
)
def test_alg_none_is_401(app, client, make, header):
    user_id = make.user("nobody@example.com")
    claims = gaia_claims(user_id)
    token = f"{b64json(header)}.{b64json(claims)}."
    body = refused(client, app, token)
    assert "HS256" in body["detail"] or "algorithm" in body["detail"].lower()
    refused(client, app, token, path=MODELS)


def test_wrong_secret_is_401(app, client, make):
    user_id = make.user()
    body = refused(client, app, gaia_token(app, user_id, secret=OTHER_SECRET))
    assert "signature" in body["detail"]


def test_other_hmac_algorithms_are_401(app, client, make):
    user_id = make.user()
    secret = gaia(app).settings.secret_key
    token = jwt.encode(gaia_claims(user_id), secret, algorithm="HS512")
    refused(client, app, token)


def test_missing_exp_is_401(app, client, make):
    user_id = make.user()
    body = refused(client, app, gaia_token(app, user_id, exp=...))
    assert "exp" in body["detail"]


def test_expired_token_is_401_saying_expired(app, client, make):
    user_id = make.user()
    token = gaia_token(app, user_id, iat=now() - 900, nbf=now() - 900, exp=now() - LEEWAY - 5)
    body = refused(client, app, token)
    assert "expired" in body["detail"].lower()


def test_expiry_within_leeway_is_still_accepted(app, client, make):
    user_id = make.user()
    token = gaia_token(app, user_id, iat=now() - 900, nbf=now() - 900, exp=now() - 3)
    assert client.get(ME, headers=bearer(token)).status_code == 200


def test_future_nbf_is_401(app, client, make):
    user_id = make.user()
    token = gaia_token(app, user_id, nbf=now() + LEEWAY + 60, exp=now() + 900)
    body = refused(client, app, token)
    assert "not valid yet" in body["detail"]


def test_wrong_audience_is_401(app, client, make):
    user_id = make.user()
    body = refused(client, app, gaia_token(app, user_id, aud="authenticated"))
    assert "audience" in body["detail"]
    refused(client, app, gaia_token(app, user_id, aud=["other", "more"]))


def test_missing_audience_is_401(app, client, make):
    user_id = make.user()
    body = refused(client, app, gaia_token(app, user_id, aud=...))
    assert "aud" in body["detail"]


def test_wrong_issuer_is_401_without_other_issuers(app, client, make):
    user_id = make.user()
    for issuer in ("gaia:prod", "https://evil.example/", ...):
        body = refused(client, app, gaia_token(app, user_id, iss=issuer))
        assert "issuer" in body["detail"].lower()


def test_non_uuid_subject_is_401(app, client, make):
    make.user()
    refused(client, app, gaia_token(app, "not-a-uuid"))
    refused(client, app, gaia_token(app, uuid.uuid4()))  # well formed, but nobody


def test_missing_subject_is_401(app, client, make):
    body = refused(client, app, gaia_token(app, uuid.uuid4(), sub=...))
    assert "sub" in body["detail"]


def test_far_future_exp_does_not_break_the_server(app, client, make):
    """A validly signed token with an absurd `exp` must not become a 500."""
    user_id = make.user()
    token = gaia_token(app, user_id, exp=10**13)  # year ~ 318857
    response = client.get(ME, headers=bearer(token))
    assert response.status_code in (200, 401), response.get_data(as_text=True)
    if response.status_code == 401:
        problem_of(response, 401, app)


def test_token_of_a_deleted_user_is_401(app, client, make):
    user_id = make.user("deleted@example.com")
    token = gaia_token(app, user_id)
    assert client.get(ME, headers=bearer(token)).status_code == 200
    with app.app_context():
        accounts.delete_user(accounts.get_user(user_id))
        db.session.commit()
    clear_cache(app)
    body = refused(client, app, token)
    assert "does not exist" in body["detail"]
    refused(client, app, token, path=MODELS)


def test_token_of_a_deactivated_user_is_401(app, client, make):
    user_id = make.user("sleepy@example.com")
    token = gaia_token(app, user_id)
    assert client.get(MODELS, headers=bearer(token)).status_code == 200
    with app.app_context():
        accounts.deactivate_user(accounts.get_user(user_id))
        db.session.commit()
    clear_cache(app)
    body = refused(client, app, token)
    assert "deactivated" in body["detail"]
    refused(client, app, token, path=MODELS)


def test_jwt_shaped_garbage_is_401(app, client):
    for token in ("a.b.c", "..", "eyJhbGciOiJIUzI1NiJ9.e30.", b64json({"alg": "HS256"}) + ".!!!.x"):
        refused(client, app, token)


def test_overlong_token_in_the_header_is_401(app, client, make):
    user_id = make.user()
    token = gaia_token(app, user_id, pad="x" * 9000)
    body = refused(client, app, token)
    assert "too long" in body["detail"]


# -- 2. Supabase -------------------------------------------------------------------------


@pytest.fixture
def supa(app, database_url, tmp_path_factory):
    """An app that also accepts Supabase tokens; shares the database `app` empties."""
    extra = make_app(database_url, tmp_path_factory, SUPABASE_JWT_SECRET=SUPABASE_SECRET)
    yield extra
    _dispose(extra)


def _dispose(extra_app) -> None:
    """Close what an extra app holds (its pool, its JWKS session) before `app` empties the tables."""
    with extra_app.app_context():
        db.session.remove()
        db.engine.dispose()
    jwks = gaia(extra_app).authenticator.tokens.jwks
    if jwks is not None:
        jwks._session.close()


def supabase_token(sub: str | None = None, *, secret: str = SUPABASE_SECRET, algorithm="HS256", **overrides):
    claims = {
        "aud": "authenticated",
        "sub": str(uuid.uuid4()) if sub is None else sub,
        "email": "supa@example.com",
        "role": "authenticated",
        "iat": now(),
        "exp": now() + 600,
        "iss": "https://project.supabase.co/auth/v1",
    }
    for name, value in overrides.items():
        claims[name] = value
    claims = {name: value for name, value in claims.items() if value is not ...}
    return jwt.encode(claims, secret, algorithm=algorithm)


def test_supabase_token_makes_a_user_once(supa):
    client = supa.test_client()
    sub = str(uuid.uuid4())
    before = user_count(supa)
    token = supabase_token(sub, email="Fresh.Supa@Example.com")
    response = client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["auth_type"] == "jwt"
    assert body["email"] == "fresh.supa@example.com"  # the email claim, free, is used
    assert body["is_admin"] is False
    assert user_count(supa) == before + 1
    rows = users_by_subject(supa, f"supabase|{sub}")
    assert len(rows) == 1 and str(rows[0]["id"]).replace("-", "") == body["id"].replace("-", "")

    # Again, with the cache emptied and with a brand-new token of the same subject.
    clear_cache(supa)
    again = client.get(ME, headers=bearer(token))
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]
    later = client.get(MODELS, headers=bearer(supabase_token(sub, email="fresh.supa@example.com")))
    assert later.status_code == 200
    assert user_count(supa) == before + 1


def test_supabase_email_of_an_existing_account_is_not_linked(supa, make):
    owner = make.user("owner@example.com", admin=True)
    client = supa.test_client()
    for email in ("owner@example.com", "OWNER@example.com "):
        sub = str(uuid.uuid4())
        response = client.get(ME, headers=bearer(supabase_token(sub, email=email)))
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        assert body["id"] != str(owner)
        assert body["is_admin"] is False
        assert body["email"].endswith("@external.invalid")
        assert body["email"] != "owner@example.com"
    with supa.app_context():
        assert accounts.find_user_by_email("owner@example.com").id == owner
        assert accounts.find_user_by_email("owner@example.com").external_subject is None


def test_supabase_user_without_email_gets_a_placeholder(supa):
    response = supa.test_client().get(ME, headers=bearer(supabase_token(email=...)))
    assert response.status_code == 200
    assert response.get_json()["email"].endswith("@external.invalid")


def test_supabase_wrong_audience_is_401(supa):
    client = supa.test_client()
    before = user_count(supa)
    body = refused(client, supa, supabase_token(aud="gaia"))
    assert "audience" in body["detail"]
    refused(client, supa, supabase_token(aud=...))
    assert user_count(supa) == before


def test_supabase_missing_sub_is_401(supa):
    before = user_count(supa)
    body = refused(supa.test_client(), supa, supabase_token(...))
    assert "sub" in body["detail"]
    assert user_count(supa) == before


def test_supabase_missing_exp_or_expired_is_401(supa):
    client = supa.test_client()
    refused(client, supa, supabase_token(exp=...))
    body = refused(client, supa, supabase_token(exp=now() - 60))
    assert "expired" in body["detail"]


def test_supabase_token_signed_with_another_secret_is_401(supa):
    before = user_count(supa)
    body = refused(supa.test_client(), supa, supabase_token(secret=OTHER_SECRET))
    assert "signature" in body["detail"]
    assert user_count(supa) == before


def test_supabase_token_signed_with_gaia_secret_is_401(supa):
    secret = gaia(supa).settings.secret_key
    refused(supa.test_client(), supa, supabase_token(secret=secret))


def test_rs256_token_claiming_to_be_supabase_is_401(supa):
    key = STRANGER
    before = user_count(supa)
    body = refused(supa.test_client(), supa, supabase_token(secret=key, algorithm="RS256"))
    assert "HS256" in body["detail"]
    assert user_count(supa) == before


def test_supabase_alg_none_is_401(supa):
    claims = {"aud": "authenticated", "sub": str(uuid.uuid4()), "exp": now() + 600}
    refused(supa.test_client(), supa, f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}.")


def test_deactivated_supabase_user_is_401(supa):
    client = supa.test_client()
    sub = str(uuid.uuid4())
    response = client.get(ME, headers=bearer(supabase_token(sub, email="quits@example.com")))
    assert response.status_code == 200
    with supa.app_context():
        accounts.deactivate_user(accounts.get_user(response.get_json()["id"]))
        db.session.commit()
    clear_cache(supa)
    body = refused(client, supa, supabase_token(sub, email="quits@example.com"))
    assert "deactivated" in body["detail"]


def test_supabase_not_configured_refuses_its_tokens(app, client):
    body = refused(client, app, supabase_token())
    assert "issuer" in body["detail"].lower()


# -- 3. an external issuer with a JWKS ---------------------------------------------------


RSA_K1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_K2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_E1 = ec.generate_private_key(ec.SECP256R1())
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # in no key set


def jwk(private_key, kid: str) -> dict:
    public = private_key.public_key()
    if isinstance(private_key, rsa.RSAPrivateKey):
        found = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        found = ECAlgorithm.to_jwk(public, as_dict=True)
    found["kid"] = kid
    found["use"] = "sig"
    return found


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 with a switchable key set and failure mode."""

    def __init__(self) -> None:
        self.keys = [jwk(RSA_K1, "k1"), jwk(EC_E1, "e1")]
        self.status = 200
        self.raw: bytes | None = None  # served as is instead of the key set, when set
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests += 1
                if outer.status != 200:
                    payload = b'{"error": "boom"}'
                    self.send_response(outer.status)
                else:
                    payload = outer.raw if outer.raw is not None else json.dumps({"keys": outer.keys}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def jwks_server():
    server = JWKSServer()
    yield server
    server.stop()


@pytest.fixture
def idp(app, database_url, tmp_path_factory, jwks_server):
    extra = make_app(
        database_url,
        tmp_path_factory,
        JWT_JWKS_URL=jwks_server.url,
        JWT_ISSUER=IDP_ISSUER,
        JWT_AUDIENCE=IDP_AUDIENCE,
    )
    yield extra
    _dispose(extra)


def jwks_of(app):
    return gaia(app).authenticator.tokens.jwks


def idp_claims(sub: str | None = None, **overrides) -> dict:
    claims = {
        "iss": IDP_ISSUER,
        "aud": IDP_AUDIENCE,
        "sub": f"user-{uuid.uuid4().hex[:8]}" if sub is None else sub,
        "iat": now(),
        "exp": now() + 600,
        "email": "idp-user@example.com",
    }
    for name, value in overrides.items():
        claims[name] = value
    return {name: value for name, value in claims.items() if value is not ...}


def idp_token(key=RSA_K1, kid: str | None = "k1", algorithm: str = "RS256", sub=None, **overrides) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(idp_claims(sub, **overrides), key, algorithm=algorithm, headers=headers)


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_by_hand(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}".encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64url(signature)}"


def test_rs256_token_with_known_kid_is_200_and_makes_a_user(idp, jwks_server):
    client = idp.test_client()
    before = user_count(idp)
    response = client.get(ME, headers=bearer(idp_token(sub="alice-123", email="alice@example.com")))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["auth_type"] == "jwt"
    assert body["email"] == "alice@example.com"
    rows = users_by_subject(idp, "jwks|alice-123")
    assert len(rows) == 1
    assert user_count(idp) == before + 1
    assert jwks_server.requests == 1
    # Seen again (cache emptied, another token): the same user, no new fetch.
    clear_cache(idp)
    again = client.get(MODELS, headers=bearer(idp_token(sub="alice-123", email="alice@example.com")))
    assert again.status_code == 200
    assert user_count(idp) == before + 1
    assert jwks_server.requests == 1


def test_es256_token_with_known_kid_is_200(idp):
    response = idp.test_client().get(ME, headers=bearer(idp_token(EC_E1, "e1", "ES256", sub="ec-user")))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(users_by_subject(idp, "jwks|ec-user")) == 1


def test_a_token_whose_alg_does_not_match_its_key_is_401(idp):
    client = idp.test_client()
    # An EC signature presented under the RSA key's kid, and the reverse.
    refused(client, idp, idp_token(EC_E1, "k1", "ES256"))
    refused(client, idp, idp_token(RSA_K1, "e1", "RS256"))


def test_unknown_kid_is_401_and_refetches_at_most_once(idp, jwks_server):
    client = idp.test_client()
    assert client.get(ME, headers=bearer(idp_token())).status_code == 200
    assert jwks_server.requests == 1
    cache = jwks_of(idp)
    cache.min_refresh_interval = 0.3
    time.sleep(0.35)
    stranger = STRANGER
    body = refused(client, idp, idp_token(stranger, "nope"))
    assert "unknown key" in body["detail"]
    assert jwks_server.requests == 2  # asked again for the unknown kid
    refused(client, idp, idp_token(stranger, "nope-2"))
    refused(client, idp, idp_token(stranger, "nope"))
    assert jwks_server.requests == 2  # but not again right away


def test_unknown_kid_storm_with_default_interval(idp, jwks_server):
    client = idp.test_client()
    stranger = STRANGER
    for n in range(5):
        refused(client, idp, idp_token(stranger, f"x{n}"))
    assert jwks_server.requests == 1
    assert client.get(ME, headers=bearer(idp_token())).status_code == 200
    assert jwks_server.requests == 1


def test_a_new_key_is_found_by_refreshing_on_unknown_kid(idp, jwks_server):
    client = idp.test_client()
    assert client.get(ME, headers=bearer(idp_token())).status_code == 200
    jwks_server.keys = [*jwks_server.keys, jwk(RSA_K2, "k2")]
    jwks_of(idp).min_refresh_interval = 0
    response = client.get(ME, headers=bearer(idp_token(RSA_K2, "k2", sub="rotated")))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert jwks_server.requests == 2
    # A key dropped from the set is forgotten at the next refresh.
    jwks_server.keys = [jwk(RSA_K2, "k2")]
    jwks_of(idp).max_age = 0
    refused(client, idp, idp_token(RSA_K1, "k1", sub="old-key"))


def test_jwks_500_keeps_known_keys_working(idp, jwks_server):
    client = idp.test_client()
    assert client.get(ME, headers=bearer(idp_token(sub="steady"))).status_code == 200
    cache = jwks_of(idp)
    cache.max_age = 0
    cache.min_refresh_interval = 0
    jwks_server.status = 500
    clear_cache(idp)
    response = client.get(ME, headers=bearer(idp_token(sub="steady")))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert jwks_server.requests >= 2  # a refresh was tried, and failed
    # An unknown kid during the outage is a clean 401, never a 5xx.
    body = refused(client, idp, idp_token(RSA_K2, "k2"))
    assert "unknown key" in body["detail"]


def test_jwks_server_gone_keeps_known_keys_working(idp, jwks_server):
    client = idp.test_client()
    assert client.get(ME, headers=bearer(idp_token(EC_E1, "e1", "ES256"))).status_code == 200
    jwks_server.stop()
    cache = jwks_of(idp)
    cache.max_age = 0
    cache.min_refresh_interval = 0
    clear_cache(idp)
    started = time.monotonic()
    response = client.get(ME, headers=bearer(idp_token(EC_E1, "e1", "ES256")))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert client.get(MODELS, headers=bearer(idp_token())).status_code == 200
    assert time.monotonic() - started < 5


JWKS_GARBAGE = {
    "unusable-key": json.dumps({"keys": [{"kty": "nonsense", "kid": "k1"}]}).encode(),
    "empty-set": b'{"keys": []}',
    "json-list": b"[]",
    "not-json": b"<html>maintenance</html>",
}


@pytest.mark.parametrize("garbage", sorted(JWKS_GARBAGE))
def test_jwks_garbage_keeps_known_keys_working(idp, jwks_server, garbage):
    client = idp.test_client()
    assert client.get(ME, headers=bearer(idp_token())).status_code == 200
    jwks_server.raw = JWKS_GARBAGE[garbage]
    cache = jwks_of(idp)
    cache.max_age = 0
    cache.min_refresh_interval = 0
    clear_cache(idp)
    response = client.get(ME, headers=bearer(idp_token()))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert jwks_server.requests == 2


@pytest.mark.parametrize("garbage", sorted(JWKS_GARBAGE))
def test_jwks_garbage_from_the_start_is_401_not_500(idp, jwks_server, garbage):
    jwks_server.raw = JWKS_GARBAGE[garbage]
    body = refused(idp.test_client(), idp, idp_token())
    assert "unknown key" in body["detail"]


def test_non_string_kid_is_401(idp):
    signing_input = f"{b64json({'alg': 'RS256', 'kid': 123})}.{b64json(idp_claims())}".encode()
    algorithm = RSAAlgorithm(RSAAlgorithm.SHA256)
    signature = algorithm.sign(signing_input, RSA_K1)
    refused(idp.test_client(), idp, f"{signing_input.decode()}.{b64url(signature)}")


def test_jwks_down_from_the_start_is_401_not_500(idp, jwks_server):
    jwks_server.status = 503
    body = refused(idp.test_client(), idp, idp_token())
    assert "unknown key" in body["detail"]


def test_hs256_signed_with_the_rsa_public_key_is_401(idp, jwks_server):
    """Algorithm confusion: the public key as an HMAC secret must not verify."""
    client = idp.test_client()
    assert client.get(ME, headers=bearer(idp_token())).status_code == 200  # k1 now cached
    pem = public_pem(RSA_K1)
    before = user_count(idp)
    for header in ({"alg": "HS256", "typ": "JWT", "kid": "k1"}, {"alg": "HS256", "typ": "JWT"}):
        token = hs256_by_hand(header, idp_claims("confused"), pem)
        body = refused(client, idp, token)
        assert "RS256" in body["detail"]
    # The JWK form of the key (n, e) as the secret, and HS384/HS512, as well.
    jwk_secret = json.dumps(jwk(RSA_K1, "k1")).encode()
    refused(client, idp, hs256_by_hand({"alg": "HS256", "kid": "k1"}, idp_claims("confused"), jwk_secret))
    for alg in ("HS384", "HS512"):
        header = b64json({"alg": alg, "kid": "k1"})
        claims = b64json(idp_claims("confused"))
        digest = hashlib.sha384 if alg == "HS384" else hashlib.sha512
        signature = hmac.new(pem, f"{header}.{claims}".encode(), digest).digest()
        refused(client, idp, f"{header}.{claims}.{b64url(signature)}")
    assert users_by_subject(idp, "jwks|confused") == []
    assert user_count(idp) == before


def test_idp_wrong_issuer_is_401(idp):
    client = idp.test_client()
    for issuer in ("https://evil.example.test/", "https://idp.example.test", ...):
        body = refused(client, idp, idp_token(iss=issuer))
        assert "issuer" in body["detail"].lower()


def test_idp_wrong_audience_is_401(idp):
    client = idp.test_client()
    body = refused(client, idp, idp_token(aud="someone-else"))
    assert "audience" in body["detail"]
    refused(client, idp, idp_token(aud=...))
    refused(client, idp, idp_token(aud="gaia"))


def test_idp_missing_exp_or_expired_is_401(idp):
    client = idp.test_client()
    body = refused(client, idp, idp_token(exp=...))
    assert "exp" in body["detail"]
    body = refused(client, idp, idp_token(exp=now() - LEEWAY - 30))
    assert "expired" in body["detail"]
    refused(client, idp, idp_token(nbf=now() + LEEWAY + 60))


def test_idp_missing_sub_is_401(idp):
    body = refused(idp.test_client(), idp, idp_token(sub=...))
    assert "sub" in body["detail"]


def test_idp_alg_none_is_401(idp):
    client = idp.test_client()
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "none", "typ": "JWT", "kid": "k1"}):
        token = f"{b64json(header)}.{b64json(idp_claims('ghost'))}."
        refused(client, idp, token)
    assert users_by_subject(idp, "jwks|ghost") == []


def test_idp_token_signed_by_a_stranger_with_a_known_kid_is_401(idp):
    stranger = STRANGER
    body = refused(idp.test_client(), idp, idp_token(stranger, "k1"))
    assert "signature" in body["detail"]


def test_idp_token_with_a_gaia_issuer_is_not_trusted_on_the_idp_key(idp):
    refused(idp.test_client(), idp, idp_token(iss=GAIA_ISSUER, aud="gaia"))


def test_idp_email_of_an_existing_account_is_not_linked(idp, make):
    owner = make.user("boss@example.com", admin=True)
    response = idp.test_client().get(ME, headers=bearer(idp_token(sub="pretender", email="boss@example.com")))
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] != str(owner) and body["is_admin"] is False
    assert body["email"].endswith("@external.invalid")


# -- 4. POST /auth/validate --------------------------------------------------------------


def validate(client, body):
    return client.post(VALIDATE, json=body, environ_base=_remote())


def test_validate_good_token(app, client, make):
    user_id = make.user("valid@example.com")
    response = validate(client, {"token": gaia_token(app, user_id)})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["valid"] is True
    assert body["auth_type"] == "jwt"
    assert body["user_id"] == str(user_id)
    assert set(body["scopes"]) == {"assets", "chat"}
    assert body["expires_at"]
    assert_no_leak(response, app)


@pytest.mark.parametrize("kind", ["expired", "wrong-secret", "alg-none", "garbage", "deleted"])
def test_validate_bad_token(app, client, make, kind):
    user_id = make.user("invalid@example.com")
    if kind == "expired":
        token = gaia_token(app, user_id, exp=now() - 3600)
    elif kind == "wrong-secret":
        token = gaia_token(app, user_id, secret=OTHER_SECRET)
    elif kind == "alg-none":
        token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(gaia_claims(user_id))}."
    elif kind == "garbage":
        token = "not.a.jwt"
    else:
        token = gaia_token(app, uuid.uuid4())
    response = validate(client, {"token": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["valid"] is False
    assert body["reason"]
    assert "user_id" not in body or body["user_id"] is None
    if kind == "expired":
        assert "expired" in body["reason"]
    assert_no_leak(response, app)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"token": "a.b.c", "api_key": "gaia_local_whatever"},
        {"token": ""},
        {"token": None},
        {"token": 12345},
    ],
)
def test_validate_needs_exactly_one_credential(app, client, payload):
    response = validate(client, payload)
    body = problem_of(response, 422, app)
    assert body["detail"]


def test_validate_overlong_token_is_a_problem_not_a_500(app, client, make):
    user_id = make.user()
    token = gaia_token(app, user_id, pad="x" * 9000)
    assert len(token) > 9000
    response = validate(client, {"token": "x" * 9000})
    assert response.status_code in (401, 422)
    problem_of(response, response.status_code, app)
    response = validate(client, {"token": token})
    assert response.status_code in (401, 422)
    problem_of(response, response.status_code, app)


def test_validate_supabase_and_idp_tokens(supa, idp):
    supa_client = supa.test_client()
    response = validate(supa_client, {"token": supabase_token(email="val@example.com")})
    assert response.status_code == 200 and response.get_json()["valid"] is True
    response = validate(supa_client, {"token": supabase_token(secret=OTHER_SECRET)})
    assert response.status_code == 200 and response.get_json()["valid"] is False

    idp_client = idp.test_client()
    response = validate(idp_client, {"token": idp_token(sub="val-idp")})
    assert response.status_code == 200 and response.get_json()["valid"] is True
    pem_token = hs256_by_hand({"alg": "HS256", "kid": "k1"}, idp_claims("x"), public_pem(RSA_K1))
    response = validate(idp_client, {"token": pem_token})
    assert response.status_code == 200 and response.get_json()["valid"] is False
