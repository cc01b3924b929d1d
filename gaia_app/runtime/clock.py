"""The one clock the runtime pieces read, so that time-driven behaviour (cache lifetimes,
expiry, Retry-After pauses) can be tested by moving time instead of waiting for it."""

from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    """Wall and monotonic time. Tests pass a subclass whose time they move by hand."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        """Timezone-aware UTC."""
        return datetime.fromtimestamp(self.time(), timezone.utc)
