"""How many live connections (WebSockets and SSE streams together) one user, and one web
process, may hold open.

Each connection costs the process a socket, a consumer or a streaming task, a channel in
the channel layer with its buffer, and its group memberships; without a bound one
customer opened 2,000 sockets and 500 streams and took 270 MB (issue 10). Past a limit
the connection is refused: a WebSocket is accepted and closed at once with ``TOO_MANY``
(so the client can tell it from "sign in", 4401), an SSE request is a 429 with
``Retry-After``.

Counted per process, in memory: in services mode each web process has its own budget, and
a user may hold ``WAYBILL_LIVE_CONNECTIONS_PER_USER`` on each readmodels web process.
(A shared count in Redis would outlive a process killed with its connections, and need
expiry and heartbeats to undo that; one process's count dies with its connections.)

A ``Held`` is released exactly once, however the connection ends: the WebSocket
consumer releases it when its application returns or fails, the SSE stream when its
body ends or the response is closed, whichever comes first.
"""

from __future__ import annotations

import threading
from collections import Counter

from django.conf import settings

from waybill.memory import memory_release

# Close code of a WebSocket refused for the limits (4000-4999 are ours; 429 echoes HTTP).
TOO_MANY = 4429
# What an SSE client refused for the limits is told to wait: long enough not to hammer, short
# enough that a closed tab's slot is reused soon.
RETRY_AFTER_SECONDS = 10
# When the last connection of a burst at least this big closes, free memory is handed back
# to the system (waybill.memory): the allocators would otherwise keep the burst's peak.
RELEASE_AFTER_PEAK = 100
# ...a moment later: the last release runs as its connection ends, before the consumers,
# tasks and buffers of the burst are freed.
RELEASE_DELAY_SECONDS = 2.0


class TooMany(Exception):
    """The user, or this process, already holds as many live connections as allowed."""


class Held:
    def __init__(self, owner: LiveConnections, user_id: int):
        self._owner = owner
        self.user_id = user_id
        self._released = False

    def release(self) -> None:
        self._owner._release(self)


class LiveConnections:
    """The counts of one process. Thread-safe: SSE requests are admitted in a view's
    thread and released on the event loop."""

    def __init__(self):
        self._lock = threading.Lock()
        self.total = 0
        self.by_user: Counter[int] = Counter()
        self.peak = 0  # since memory was last handed back

    def hold(self, *, user_id: int) -> Held:
        per_user = settings.WAYBILL_LIVE_CONNECTIONS_PER_USER
        per_process = settings.WAYBILL_LIVE_CONNECTIONS_PER_PROCESS
        with self._lock:
            if self.by_user[user_id] >= per_user:
                raise TooMany(f"at most {per_user} live connections per user "
                              f"(WAYBILL_LIVE_CONNECTIONS_PER_USER); close one first")
            if self.total >= per_process:
                raise TooMany(f"this server holds its most live connections ({per_process}, "
                              f"WAYBILL_LIVE_CONNECTIONS_PER_PROCESS); try again later")
            self.total += 1
            self.peak = max(self.peak, self.total)
            self.by_user[user_id] += 1
        return Held(self, user_id)

    def _release(self, held: Held) -> None:
        with self._lock:
            if held._released:
                return
            held._released = True
            self.total -= 1
            self.by_user[held.user_id] -= 1
            if not self.by_user[held.user_id]:
                del self.by_user[held.user_id]  # a user gone leaves no key behind
            burst_over = self.total == 0 and self.peak >= RELEASE_AFTER_PEAK
            if burst_over:
                self.peak = 0
        if burst_over:
            release_memory_later()


def release_memory_later() -> None:
    timer = threading.Timer(RELEASE_DELAY_SECONDS, memory_release)
    timer.daemon = True
    timer.start()


# The process's one count, shared by the WebSocket consumers and the SSE view.
live_connections = LiveConnections()
