"""Exponential backoff with jitter, shared by the relay, the consumers' reconnects and the
inbox retries."""

import logging
import random
import threading


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Delay before try ``attempt + 1`` after ``attempt`` failures ("equal jitter").

    Half the exponential delay is kept so retries still back off; the other half is
    random so consumers that failed together do not retry together."""
    exponential = min(cap, base * (2 ** max(attempt - 1, 0)))
    return exponential / 2 + random.uniform(0, exponential / 2)


class Reconnects:
    """The pause of a long-running loop (relay, consumer, commit listener) after it lost
    its broker or database: longer with each failure in a row (0.5 s up to 30 s,
    jittered), back to short once an attempt gets through."""

    def __init__(self, what: str, stop: threading.Event, log: logging.Logger):
        self.what, self.stop, self.log, self.failures = what, stop, log, 0

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self) -> None:
        """Log the exception being handled, then wait (or until ``stop`` is set)."""
        self.failures += 1
        delay = backoff_delay(self.failures, base=0.5, cap=30.0)
        self.log.exception("%s failed; retrying in %.1fs", self.what, delay)
        self.stop.wait(delay)
