"""Per-key token buckets: ``rate`` requests per second, bursts up to ``burst``.

In-process, so a deployment of N API processes allows N times the rate;
fine for abuse protection (the goal), not for billing. Pure: the caller
passes the monotonic time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per client key; idle buckets are forgotten so memory stays bounded."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_clients = max_clients
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, client: str, now: float) -> int:
        """0 if the request may proceed, else the whole seconds to wait (Retry-After)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self._max_clients:
                self._forget_full(now)
            bucket = self._buckets[client] = TokenBucket(self._rate, self._burst)
        wait = bucket.take(now)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))

    def _forget_full(self, now: float) -> None:
        # A bucket that would be full again carries no state worth keeping.
        full_after = self._burst / self._rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}
        if len(self._buckets) >= self._max_clients:
            self._buckets.clear()  # that many busy clients at once: start every one afresh
