"""The scalar parts of `json_values`: numbers within a schema's bounds and `multipleOf`, and
strings in the common formats (`date`, `email`, `uuid`, ...)."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Mapping
from typing import Any


def formatted(kind: Any, word: str, rng: random.Random) -> str | None:
    slug = "".join(c for c in word.lower() if c.isalnum()) or "gaia"
    day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    return {
        "date": day, "time": clock, "date-time": f"{day}T{clock}",
        "email": f"{slug}@example.com", "idn-email": f"{slug}@example.com",
        "uri": f"https://example.com/{slug}", "url": f"https://example.com/{slug}",
        "hostname": f"{slug}.example.com", "idn-hostname": f"{slug}.example.com",
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "ipv4": f"192.0.2.{rng.randint(1, 254)}", "ipv6": f"2001:db8::{rng.randint(1, 65535):x}",
    }.get(kind) if isinstance(kind, str) else None


class Bounds:
    """A number's range (draft 4's boolean `exclusive*` included) and `multipleOf`."""

    def __init__(self, flat: Mapping, integer: bool) -> None:
        self.integer = integer
        self.low, self.low_open = _bound(flat, "minimum", "exclusiveMinimum")
        self.high, self.high_open = _bound(flat, "maximum", "exclusiveMaximum")
        step = flat.get("multipleOf")
        self.step = step if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0 else None

    def admits(self, number: float) -> bool:
        if not math.isfinite(number):
            return False
        if self.integer and not float(number).is_integer():
            return False
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            return False
        return self.step is None or _is_multiple(number, self.step)

    def pick(self, rng: random.Random) -> int | float | None:
        # Unbounded below: from 0 when that leaves room, so values stay small and plain.
        low = self.low if self.low is not None else (0 if self.high is None or self.high >= 1 else self.high - 100)
        high = self.high if self.high is not None else low + 100
        unit = self.step or 1
        if not (math.isfinite(low / unit) and math.isfinite(high / unit)):
            return None
        first, last = math.ceil(low / unit), math.floor(high / unit)
        if first <= last:
            start = rng.randint(first, min(last, first + 20))
            for k in [*range(start, min(last, start + 50) + 1), *range(first, start)]:
                for number in (k * unit, round(k * unit, 12)):
                    number = int(number) if float(number).is_integer() else number
                    if self.admits(number):
                        return number
        middle = (low + high) / 2
        return middle if not self.integer and self.step is None and self.admits(middle) else None

    def pick_number(self, rng: random.Random) -> int | float | None:
        """For `number`: a fraction when the range takes one (12.5 reads as a measure)."""
        made = self.pick(rng)
        if made is not None and not self.integer and self.step is None and self.admits(made + 0.5):
            return made + 0.5
        return made


def _bound(flat: Mapping, inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    closed, opened = flat.get(inclusive), flat.get(exclusive)
    if isinstance(opened, bool):  # draft 4: a flag on the inclusive bound
        return closed, opened
    candidates = [(value, is_open) for value, is_open in ((closed, False), (opened, True))
                  if isinstance(value, (int, float))]
    if not candidates:
        return None, False
    tighter = max if inclusive == "minimum" else min
    value = tighter(candidate for candidate, _ in candidates)
    return value, any(is_open and candidate == value for candidate, is_open in candidates)


def _is_multiple(number: float, step: float) -> bool:
    """As `jsonschema` decides `multipleOf`."""
    if isinstance(step, float):
        quotient = number / step
        return math.isfinite(quotient) and int(quotient) == quotient
    return not number % step
