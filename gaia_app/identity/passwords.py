"""Password hashing (Argon2id) and the password policy."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
MAX_LENGTH = 256  # characters; longer is refused, not truncated

# OWASP's minimum Argon2id profile (19 MiB, 2 passes): about 20 ms on one core here, which
# keeps logins cheap for us and guessing expensive for an attacker with the hashes.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so the answer takes the same time.
    Made on first use: a worker that never sees a login does not pay for it at start-up."""
    return _hasher.hash("not a real password, only for timing")


_COMMON = frozenset(
    """
    password password1 password123 passw0rd 1234567890 12345678910 123456789a qwertyuiop
    qwerty1234 1q2w3e4r5t iloveyou12 letmein123 welcome123 administrator admin12345
    football12 baseball12 sunshine12 princess12 dragon1234 monkey1234 starwars12
    trustno1234 abc1234567 aaaaaaaaaa 0000000000 1111111111 changeme12 qwerty123456
    """.split()
)


class PasswordPolicyError(ValueError):
    pass


def check_password_policy(password: str, *, email: str | None = None) -> None:
    """Raise PasswordPolicyError with the reason when `password` is not acceptable."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in _COMMON or len(set(password)) < 4:
        raise PasswordPolicyError("is too common or too simple")
    if email and email.split("@", 1)[0].lower() in lowered and len(email.split("@", 1)[0]) >= 4:
        raise PasswordPolicyError("must not contain the name of the email address (the part before @)")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; always costs one hash, even without an account."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
