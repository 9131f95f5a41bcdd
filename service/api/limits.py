"""Token buckets per client: requests and megapixels per minute (``--rate-limit``, ``--megapixels-per-minute``).

Each client (an API key's name, or ``addr:IP`` without keys) has a bucket holding at most one minute's worth;
it refills continuously. The buckets live in this process: with N processes behind a proxy a client gets N
times the rate (divide the limits by N).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """One bucket of ``per_minute`` tokens per client (``per_minute`` 0: no limit)."""

    PRUNE_AT = 10_000  # clients remembered before full (idle) buckets are forgotten

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.rate, self.clock = per_minute, per_minute / 60.0, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, client: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 when granted, else the seconds until they will be there (inf: never)."""
        if not self.capacity:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, when = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.rate)
            if cost > self.capacity:
                return math.inf
            if tokens < cost:
                self._buckets[client] = (tokens, now)
                return (cost - tokens) / self.rate
            self._buckets[client] = (tokens - cost, now)
            if len(self._buckets) > self.PRUNE_AT:
                self._prune(now)
            return 0.0

    def _prune(self, now: float) -> None:
        full = [c for c, (tokens, when) in self._buckets.items() if tokens + (now - when) * self.rate >= self.capacity]
        for client in full:
            del self._buckets[client]
