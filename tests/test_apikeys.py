import hashlib
import re

from gaia_app.identity.apikeys import (
    CHECKSUM_CHARS,
    generate_api_key,
    hash_api_key,
    key_format_problem,
    key_hint,
)


def test_key_shape_and_randomness():
    keys = {generate_api_key("dev") for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"gaia_dev_[0-9A-Za-z]{49}", key)
        assert key_format_problem(key, "dev") is None


def test_random_part_carries_at_least_192_bits():
    # 43 base62 characters of random payload: log2(62**43) is about 256.
    key = generate_api_key("local")
    random_part = key[len("gaia_local_"):-CHECKSUM_CHARS]
    assert len(random_part) == 43


def test_every_single_character_typo_is_caught_by_the_checksum():
    key = generate_api_key("prod")
    body_start = len("gaia_prod_")
    for position in range(body_start, len(key)):
        original = key[position]
        replacement = "A" if original != "A" else "B"
        typo = key[:position] + replacement + key[position + 1:]
        assert key_format_problem(typo, "prod") is not None, position


def test_truncated_padded_and_foreign_strings_are_refused():
    key = generate_api_key("dev")
    assert key_format_problem(key[:-1], "dev")
    assert key_format_problem(key + "x", "dev")
    assert key_format_problem("sk-" + key[5:], "dev")
    assert key_format_problem("gaia_dev_" + "x" * 5000, "dev")
    assert key_format_problem("", "dev")


def test_key_of_another_environment_is_refused_by_name():
    key = generate_api_key("prod")
    problem = key_format_problem(key, "dev")
    assert problem and "'prod'" in problem


def test_hash_is_sha256_hex_and_hint_hides_the_secret():
    key = generate_api_key("dev")
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    hint = key_hint(key)
    assert hint == f"gaia_dev_...{key[-4:]}"
    assert key[12:40] not in hint
