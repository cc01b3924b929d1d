"""The API-key format: `gaia_<environment>_<43 base62 random chars><6 base62 checksum chars>`.

The random part carries 256 bits. The checksum (CRC-32 of everything before it) lets any
service refuse a mistyped, truncated or foreign string before it touches the database, the
way GitHub's token format does. Only the SHA-256 hex of a key is ever stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_CHARS = 43  # 62**43 > 2**256
CHECKSUM_CHARS = 6  # 62**6 > 2**32
_KEY_RE = re.compile(r"gaia_([a-z]{2,16})_([0-9A-Za-z]{%d})" % (RANDOM_CHARS + CHECKSUM_CHARS))
MAX_KEY_LENGTH = len("gaia__") + 16 + RANDOM_CHARS + CHECKSUM_CHARS


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        chars.append(ALPHABET[remainder])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


def generate_api_key(environment: str) -> str:
    body = f"gaia_{environment}_" + _base62(secrets.randbits(256), RANDOM_CHARS)
    return body + _checksum(body)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_hint(key: str) -> str:
    """What lists show: enough to tell keys apart, nothing to use."""
    prefix = key[: key.index("_", 5) + 1]
    return f"{prefix}...{key[-4:]}"


def key_format_problem(key: str, environment: str) -> str | None:
    """Why `key` cannot be a valid key of this environment, or None when it may be."""
    if len(key) > MAX_KEY_LENGTH:
        return "The API key is malformed."
    match = _KEY_RE.fullmatch(key)
    if match is None:
        return "The API key is malformed."
    body, checksum = key[:-CHECKSUM_CHARS], key[-CHECKSUM_CHARS:]
    if not secrets.compare_digest(_checksum(body), checksum):
        return "The API key is malformed (its checksum does not match)."
    if match.group(1) != environment:
        return (
            f"The API key belongs to the '{match.group(1)}' environment; "
            f"this is '{environment}'."
        )
    return None
