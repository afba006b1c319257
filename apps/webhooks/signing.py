"""Webhook signatures: HMAC-SHA256 over the timestamp and the exact body.

    Waybill-Webhook-Id:        the delivery's id (the same on every retry: deduplicate on it)
    Waybill-Webhook-Timestamp: unix seconds when this attempt was signed
    Waybill-Webhook-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

The key is the endpoint's secret as UTF-8 bytes, the message the ASCII timestamp, a dot,
and the body's bytes as received. Several space-separated ``v1=`` values may come (room
for a secret rotation); one match is enough.

Standard library only, so docs/webhooks.md shows ``verify`` as the receiver's recipe and
a receiver can copy it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

ID_HEADER = "Waybill-Webhook-Id"
TIMESTAMP_HEADER = "Waybill-Webhook-Timestamp"
SIGNATURE_HEADER = "Waybill-Webhook-Signature"
VERSION = "v1"
SECRET_PREFIX = "whsec_"


def secret_generate() -> str:
    """A new endpoint secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Waybill-Webhook-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def headers_for(*, secret: str, delivery_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


# --- the receiver's recipe (docs/webhooks.md) --------------------------------------------
def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> bool:
    """True if ``body`` (the raw bytes received, before any JSON parsing) was signed with
    ``secret`` less than ``tolerance`` seconds ago (either way: clocks drift)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    timestamp = lowered.get("waybill-webhook-timestamp", "")
    signatures = lowered.get("waybill-webhook-signature", "").split()
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False  # missing, malformed or stale: a replay of an old request
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(
        # compare_digest: the time taken says nothing about how much of a guess was right.
        hmac.compare_digest(value.removeprefix("v1="), expected)
        for value in signatures
        if value.startswith("v1=")
    )
