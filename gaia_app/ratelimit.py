"""Rate limits per API key or user, with the `limits` library.

With REDIS_URL the counters live in Redis (the `limits` library's sliding-window counter) and
are shared by every process. Without it each process counts on its own, with the same
algorithm in a dict (`LocalSlidingWindow`): `limits`' in-memory storage starts a timer thread
every 10 ms under load and tripled the limiter's cost per request (see bench/README.md).

When Redis cannot be reached, RATE_LIMIT_ON_ERROR decides: `open` (default) lets the request
through and logs, `closed` answers 503.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from gaia_app.errors import APIError

log = logging.getLogger("gaia.ratelimit")


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_at: float

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(max(int(self.reset_at - time.time() + 0.999), 0)),
        }


@lru_cache(maxsize=256)
def parse_limit(text: str) -> RateLimitItem:
    return parse(text)


class LocalSlidingWindow:
    """The sliding-window counter of one process: this window's count plus the previous
    window's, weighted by how much of it still overlaps the last `period` seconds."""

    def __init__(self) -> None:
        self._windows: dict[tuple, list] = {}  # key -> [window start, count, previous count]
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + 60

    def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, int, float]:
        period = item.get_expiry()
        now = time.time()
        start = now - now % period
        key = (item.amount, period, *identifiers)
        with self._lock:
            window = self._windows.get(key)
            if window is None or window[0] <= start - 2 * period:
                window = self._windows[key] = [start, 0, 0]
            elif window[0] < start:  # the next window began: this one becomes the previous
                window[:] = [start, 0, window[1]]
            weight = 1 - (now - start) / period
            used = window[2] * weight + window[1]
            allowed = used + 1 <= item.amount
            if allowed:
                window[1] += 1
                used += 1
            if time.monotonic() > self._next_sweep:
                self._sweep(now)
        return allowed, int(item.amount - used), start + period

    def _sweep(self, now: float) -> None:
        self._next_sweep = time.monotonic() + 60
        for key, window in list(self._windows.items()):
            if window[0] + 2 * key[1] < now:
                del self._windows[key]


class RateLimiter:
    def __init__(self, settings) -> None:
        self.default = settings.rate_limit_default
        self.fail_open = settings.rate_limit_on_error == "open"
        self.local = None
        if settings.redis_url:
            self.storage = storage_from_string(
                settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        else:
            self.local = LocalSlidingWindow()

    def _count(self, item: RateLimitItem, namespace: str, identity: str) -> tuple[bool, int, float]:
        if self.local is not None:
            return self.local.hit(item, namespace, identity)
        allowed = self.strategy.hit(item, namespace, identity)
        stats = self.strategy.get_window_stats(item, namespace, identity)
        return allowed, stats.remaining, stats.reset_time

    def hit(self, namespace: str, identity: str, limit: str | None = None) -> RateLimitState | None:
        """Count one request; raise 429 past the limit. None when the counter is unreachable."""
        item = parse_limit(limit or self.default)
        try:
            allowed, remaining, reset_at = self._count(item, namespace, identity)
        except Exception as exc:
            if self.fail_open:
                log.warning("rate limit storage unavailable, letting the request through: %s", exc)
                return None
            log.error("rate limit storage unavailable, refusing the request: %s", exc)
            raise APIError(
                503,
                "Rate limiting is unavailable, so requests are refused for now; try again shortly.",
                type="/problems/rate-limit-unavailable",
                headers={"Retry-After": "5"},
            ) from None
        state = RateLimitState(limit=item.amount, remaining=remaining, reset_at=reset_at)
        if not allowed:
            retry_after = max(int(reset_at - time.time() + 0.999), 1)
            raise APIError(
                429,
                f"Rate limit of {item.amount} per {_period(item)} exceeded; retry in {retry_after} s.",
                type="/problems/rate-limited",
                headers={**state.headers(), "Retry-After": str(retry_after)},
            )
        return state


def _period(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
