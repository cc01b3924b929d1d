"""Rate limits per API key or user, with the `limits` library.

The algorithm is the sliding-window counter: this window's count plus the previous window's,
weighted by how much of it still overlaps the last period. With REDIS_URL the counters live in
Redis and are shared by every process (`RedisSlidingWindow`: one Lua script, so one round trip
answers both "allowed?" and "how many are left?"; `limits`' Redis strategy needs two, which
doubled the limiter's cost). Without Redis each process counts on its own in a dict
(`LocalSlidingWindow`; `limits`' in-memory storage starts a timer thread every 10 ms under
load). `limits` parses the rate strings. See bench/README.md for the measurements.

When Redis cannot be reached, RATE_LIMIT_ON_ERROR decides: `open` (default) lets the request
through and logs, `closed` answers 503.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse

from gaia_app.errors import RateLimited, Unavailable

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


def seconds_until_allowed(amount: int, period: float, start: float, now: float,
                          previous: float, current: float) -> float:
    """When the next request would fit, for a refused one: the weight of the previous window
    fades as this one goes on, and in the next window this one's count becomes the fading
    part. So a client that waits this long gets through, and one that comes sooner does not."""
    room = amount - 1 - current  # what the previous window's weighted share may still be
    if previous > 0 and room >= 0:
        when = start + period * (1 - room / previous)
    elif current <= amount - 1:
        when = start + period
    else:
        when = start + period * (2 - (amount - 1) / current)
    # A hair more, so that rounding in the weights never makes the answer early.
    return max(when - now, 0.0) + 1e-6


class LocalSlidingWindow:
    """The sliding-window counter of one process: this window's count plus the previous
    window's, weighted by how much of it still overlaps the last `period` seconds."""

    def __init__(self) -> None:
        self._windows: dict[tuple, list] = {}  # key -> [window start, count, previous count]
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + 60

    def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, int, float, float]:
        """(allowed, remaining, when this window ends, seconds until allowed when refused)."""
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
                wait = 0.0
            else:
                wait = seconds_until_allowed(item.amount, period, start, now, window[2], window[1])
            if time.monotonic() > self._next_sweep:
                self._sweep(now)
        return allowed, int(item.amount - used), start + period, wait

    def _sweep(self, now: float) -> None:
        self._next_sweep = time.monotonic() + 60
        for key, window in list(self._windows.items()):
            if window[0] + 2 * key[1] < now:
                del self._windows[key]


# KEYS: this window's counter, the previous window's. ARGV: limit, the previous window's
# weight, the counter's lifetime, requests this process already let through and has not
# reported yet. Adds those, then counts this request if it fits.
# Returns {allowed (0/1), requests counted (a string), this window's count, the previous one's}.
_SLIDING_WINDOW_LUA = """
local pending = tonumber(ARGV[4])
local current
if pending > 0 then
  current = redis.call('INCRBY', KEYS[1], pending)
  if current == pending then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
else
  current = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = previous * tonumber(ARGV[2]) + current
if used + 1 > tonumber(ARGV[1]) then
  return {0, tostring(used), current, previous}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return {1, tostring(used + 1), current + 1, previous}
"""

# A process may let a key's requests through on its own and report them in one batch, every
# SYNC_INTERVAL or every SYNC_FRACTION of the limit, whichever comes first (and always before a
# refusal). Limits too small for that (under 100 per window) are checked in Redis on every
# request: a round trip costs more CPU than a cheap request, so only busy keys are batched.
SYNC_INTERVAL = 0.05
SYNC_FRACTION = 0.01


class RedisSlidingWindow:
    """The same counter in Redis, shared by every process.

    Exact (one round trip per request) for limits under 100 per window. For larger ones, what
    each other process let through since its last report may be unseen, so the limit can be
    overshot by at most 1% of it per other process. A refusal is always decided by Redis.
    """

    def __init__(self, redis_url: str, prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.script = self.client.register_script(_SLIDING_WINDOW_LUA)
        self.prefix = prefix
        # key -> [window start, requests counted at the last report, let through since, when]
        self._local: dict[str, list] = {}
        self._lock = threading.Lock()

    def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, int, float, float]:
        """(allowed, remaining, when this window ends, seconds until allowed when refused)."""
        period = item.get_expiry()
        now = time.time()
        start = int(now - now % period)
        base = f"{self.prefix}:{item.amount}/{period}:{':'.join(identifiers)}"
        batched = item.amount * SYNC_FRACTION >= 1
        pending = 0
        if batched:
            remaining, pending = self._let_through_here(base, start, item)
            if remaining is not None:
                return True, remaining, float(start + period), 0.0
        weight = 1 - (now - start) / period
        try:
            allowed, used, current, previous = self.script(
                keys=[f"{base}:{start}", f"{base}:{start - period}"],
                args=[item.amount, f"{weight:.6f}", 2 * period, pending],
            )
        except Exception:
            if pending:
                with self._lock:  # keep them for the next report
                    state = self._local.get(base)
                    if state is not None:
                        state[2] += pending
            raise
        if batched:
            with self._lock:
                if len(self._local) > 10_000:
                    self._local.clear()
                self._local[base] = [start, float(used), 0, time.monotonic()]
        wait = 0.0 if allowed else seconds_until_allowed(
            item.amount, period, start, now, float(previous), float(current)
        )
        return bool(allowed), int(item.amount - float(used)), float(start + period), wait

    def _let_through_here(self, base: str, start: int, item: RateLimitItem) -> tuple[int | None, int]:
        """(remaining, when this process lets the request through unreported; else None, and
        how many it let through since its last report, to report now)."""
        with self._lock:
            state = self._local.get(base)
            if (
                state is not None
                and state[0] == start
                and time.monotonic() - state[3] < SYNC_INTERVAL
                and state[2] < item.amount * SYNC_FRACTION
                and state[1] + state[2] + 1 <= item.amount
            ):
                state[2] += 1
                return int(item.amount - state[1] - state[2]), 0
            pending = state[2] if state is not None else 0
            if state is not None:
                state[2] = 0
            return None, pending


class RateLimitUnavailable(Unavailable):
    type = "/problems/rate-limit-unavailable"


class RateLimiter:
    def __init__(self, settings) -> None:
        self.default = settings.rate_limit_default
        self.fail_open = settings.rate_limit_on_error == "open"
        if settings.redis_url:
            self.counter = RedisSlidingWindow(settings.redis_url, f"gaia:{settings.environment}:rl")
        else:
            self.counter = LocalSlidingWindow()

    def hit(self, namespace: str, identity: str, limit: str | None = None) -> RateLimitState | None:
        """Count one request; raise 429 past the limit. None when the counter is unreachable."""
        item = parse_limit(limit or self.default)
        try:
            allowed, remaining, reset_at, wait = self.counter.hit(item, namespace, identity)
        except Exception as exc:
            if self.fail_open:
                log.warning("rate limit storage unavailable, letting the request through: %s", exc)
                return None
            log.error("rate limit storage unavailable, refusing the request: %s", exc)
            raise RateLimitUnavailable(
                "Rate limiting is unavailable, so requests are refused for now; try again shortly.",
                headers={"Retry-After": "5"},
            ) from None
        state = RateLimitState(limit=item.amount, remaining=remaining, reset_at=reset_at)
        if not allowed:
            # Whole seconds, rounded up (less what float rounding adds to an exact second).
            retry_after = max(math.ceil(wait - 1e-3), 1)
            raise RateLimited(
                f"Rate limit of {item.amount} per {_period(item)} exceeded; retry in {retry_after} s.",
                headers={**state.headers(), "Retry-After": str(retry_after)},
            )
        return state


def _period(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
