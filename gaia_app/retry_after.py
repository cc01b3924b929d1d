"""`Retry-After` as a number of seconds, as LLM providers and asset providers send it.

No Gaia imports: the LLM providers' HTTP layer and the asset generators' share it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

# A provider that asks for longer than this is treated as asking for this long.
MAX_RETRY_AFTER = 3600.0


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return min(max(float(milliseconds) / 1000, 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)
