"""Waiting on a condition with a bounded timeout: the launcher waits for processes to be
ready with it, and the test suites wait for the platform to settle (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.02,
             ignore: tuple[type[BaseException], ...] = (), describe: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails with ``what`` and the last value (or exception) seen after ``timeout`` seconds,
    or what ``describe()`` says of the state then. Exceptions of the ``ignore`` types
    count as "not yet"; any other propagates at once. The interval grows to 0.2 s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            result, last = None, exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            state = describe() if describe else repr(last)
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last seen: {state}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)
