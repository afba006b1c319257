"""Exponential backoff with jitter, shared by the relay and the inbox retries."""

import random


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Delay before try ``attempt + 1`` after ``attempt`` failures ("equal jitter").

    Half the exponential delay is kept so retries still back off; the other half is
    random so consumers that failed together do not retry together."""
    exponential = min(cap, base * (2 ** max(attempt - 1, 0)))
    return exponential / 2 + random.uniform(0, exponential / 2)
