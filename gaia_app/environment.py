"""Reading single settings from an environment mapping, with operator-readable errors.
No dependencies, so that `config` and `providers.settings` can both build on it."""

from __future__ import annotations

import math
from collections.abc import Mapping


class ConfigError(Exception):
    """A setting is missing or wrong. The message is meant for the operator, as is."""


def text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The stripped value, or `default` when unset or blank."""
    value = (env.get(name) or "").strip()
    return value or default


def number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1 or 0)")
