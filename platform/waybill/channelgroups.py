"""Sending to a Channels group from synchronous code: a context's code that runs outside
the event loop (the read side pushes each change after its projection commits) calls
``group_send`` here instead of ``async_to_sync(layer.group_send)``.

``async_to_sync(layer.group_send)`` runs every call in a fresh event loop
(``asyncio.run``), and channels_redis keeps its Redis connections per event loop: every
push opened and closed a Redis connection. bench/pipeline's profile of a readmodels worker
showed it as one of the largest costs per order. Here one long-lived loop in a daemon
thread serves every push of the process, so the channel layer's connections are reused.

In the embedded platform the same process also serves the sockets, on uvicorn's loop,
and the in-memory channel layer's queues belong to that loop: waking a reader there from
another loop is not thread-safe (and is only noticed at the loop's next tick). So
``runplatform`` names its server loop (``serve_from``) and pushes run on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer

from .replaymode import refuse_while_replaying

log = logging.getLogger(__name__)

# A push waits at most this long; projections call it after commit, where a slow or
# unreachable channel layer must not hold a consumer for long.
SEND_TIMEOUT_SECONDS = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_server_loop: asyncio.AbstractEventLoop | None = None


def serve_from(loop: asyncio.AbstractEventLoop) -> None:
    """Run this process's pushes on ``loop``, the loop that serves its sockets."""
    global _server_loop
    _server_loop = loop


def _push_loop() -> asyncio.AbstractEventLoop:
    """The process's push loop, started on first use (and again in a forked child, which
    inherits the variable but not the thread)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="waybill-channelgroups", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def group_send(group: str, message: dict, *, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
    """Send ``message`` to a Channels group and wait until the layer has taken it."""
    refuse_while_replaying(f"a push to {group}")
    layer = get_channel_layer()
    if layer is None:
        return
    server = _server_loop
    loop = server if server is not None and server.is_running() else _push_loop()
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
    try:
        future.result(timeout)
    except TimeoutError:
        future.cancel()  # do not let a stuck send pile up behind later ones
        raise
