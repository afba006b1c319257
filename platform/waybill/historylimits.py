"""How long the event history is kept (``waybill.history``): declared once, here, without
Django, because both the settings (what a reader may ask for) and the launcher (the
RabbitMQ policy that makes the broker keep it, ``launcher.provision``) read it.

RabbitMQ applies a stream's retention segment by segment: a segment goes once all of it
is past the age or beyond the size, so the history may hold a little more than this, never
less (for the age). Every value comes from the environment, the same variable everywhere.
"""

from __future__ import annotations

import os
import re

MAX_AGE_VARIABLE = "WAYBILL_HISTORY_MAX_AGE_SECONDS"
MAX_BYTES_VARIABLE = "WAYBILL_HISTORY_MAX_BYTES"
SEGMENT_BYTES_VARIABLE = "WAYBILL_HISTORY_SEGMENT_BYTES"
VARIABLES = (MAX_AGE_VARIABLE, MAX_BYTES_VARIABLE, SEGMENT_BYTES_VARIABLE)

# How far back a rebuild or a rewind can go: 30 days.
MAX_AGE_SECONDS = 30 * 24 * 3600
# And at most this much of it (the stream alone; the embedded archive is bounded by age).
MAX_BYTES = 20 * 1024**3
# The unit of retention: an older segment is deleted whole.
SEGMENT_BYTES = 100 * 1024**2

STREAM = "waybill.history"


def configured(environ=os.environ) -> tuple[int, int, int]:
    """Max age in seconds, max bytes and segment bytes, as the environment sets them."""
    return (int(environ.get(MAX_AGE_VARIABLE, MAX_AGE_SECONDS)), int(environ.get(MAX_BYTES_VARIABLE, MAX_BYTES)),
            int(environ.get(SEGMENT_BYTES_VARIABLE, SEGMENT_BYTES)))


def stream_policy(vhost: str, environ=os.environ) -> dict:
    """The RabbitMQ policy (a definitions document's entry) that keeps the history stream
    as configured. A policy, not queue arguments: those are fixed when a queue is declared,
    while a policy can be changed on a running broker (provisioning again does)."""
    max_age, max_bytes, segment_bytes = configured(environ)
    return {"vhost": vhost, "name": "waybill-history", "pattern": f"^{re.escape(STREAM)}$",
            "apply-to": "queues", "priority": 1,
            "definition": {"max-age": f"{max_age}s", "max-length-bytes": max_bytes,
                           "stream-max-segment-size-bytes": segment_bytes}}
