"""How long work will take: a worker's measured seconds per pixel, by image size.

Small images cost more per pixel than large ones (fixed costs weigh more), so
the rate is learnt per size class (a power of two of pixels) as a moving
average of the worker's own runs; a size not seen yet borrows the rate of the
nearest class that was. The engine adds up these estimates to know how long a
queue takes to drain, and refuses work that could not finish in time.
"""

from __future__ import annotations

import threading

#: Weight of the newest run in the moving average.
SMOOTHING = 0.3


class CostModel:
    """Seconds per pixel of one worker, by size class; thread-safe."""

    def __init__(self) -> None:
        self._rates: dict[int, float] = {}
        self._lock = threading.Lock()

    def observe(self, pixels: int, seconds: float) -> None:
        """Record a run: ``seconds`` per image of ``pixels`` pixels."""
        if pixels <= 0 or seconds <= 0:
            return
        key, rate = pixels.bit_length(), seconds / pixels
        with self._lock:
            old = self._rates.get(key)
            self._rates[key] = rate if old is None else (1 - SMOOTHING) * old + SMOOTHING * rate

    def estimate(self, pixels: int) -> float:
        """Seconds one image of ``pixels`` pixels should take; 0 before any run was observed."""
        key = pixels.bit_length()
        with self._lock:
            if not self._rates:
                return 0.0
            nearest = min(self._rates, key=lambda k: (abs(k - key), -k))
            return self._rates[nearest] * pixels
