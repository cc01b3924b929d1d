"""Rate limits per API key or user, with the `limits` library.

With REDIS_URL the counters live in Redis and are shared by every process; without it each
process counts on its own (a limit of N per minute then allows N per process). The sliding
window counter costs one round trip to Redis per request.

When Redis cannot be reached, RATE_LIMIT_ON_ERROR decides: `open` (default) lets the request
through and logs, `closed` answers 503.
"""

from __future__ import annotations

import logging
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


class RateLimiter:
    def __init__(self, settings) -> None:
        self.default = settings.rate_limit_default
        self.fail_open = settings.rate_limit_on_error == "open"
        if settings.redis_url:
            self.storage = storage_from_string(
                settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        else:
            self.storage = storage_from_string("memory://")
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    def hit(self, namespace: str, identity: str, limit: str | None = None) -> RateLimitState | None:
        """Count one request; raise 429 past the limit. None when the counter is unreachable."""
        item = parse_limit(limit or self.default)
        try:
            allowed = self.strategy.hit(item, namespace, identity)
            stats = self.strategy.get_window_stats(item, namespace, identity)
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
        state = RateLimitState(limit=item.amount, remaining=stats.remaining, reset_at=stats.reset_time)
        if not allowed:
            retry_after = max(int(stats.reset_time - time.time() + 0.999), 1)
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
