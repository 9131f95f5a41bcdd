"""Signals during training: SIGINT/SIGTERM stop the run at the next step, after a checkpoint."""

from __future__ import annotations

import signal


class StopFlag:
    """While active, SIGINT/SIGTERM only set ``signum`` so the loop can save and leave; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict = {}

    def __enter__(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum


def ignore_signals(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops them after saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
