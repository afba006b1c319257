"""One POST of a webhook, and nothing else: no database here, so the sender can run many
at once outside any transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import httpx
from django.utils import timezone

from . import signing
from .conf import setting

USER_AGENT = "Waybill-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    started_at: datetime
    response_ms: int
    status_code: int | None = None
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@cache
def _client() -> httpx.Client:
    # One pooled client per process (as payments): a new client per POST costs a new SSL
    # context. Redirects are not followed: a 3xx is a failure, never a hop to another host.
    return httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT})


def post(*, url: str, secret: str, delivery_id: str, body: bytes) -> Outcome:
    """POST ``body`` signed for this attempt. Only 2xx counts as delivered; any other
    answer, a timeout or a network error is a failure to retry."""
    headers = {"Content-Type": "application/json",
               **signing.headers_for(secret=secret, delivery_id=delivery_id, body=body)}
    started_at = timezone.now()
    start = time.perf_counter()
    try:
        response = _client().post(url, content=body, headers=headers,
                                  timeout=setting("WAYBILL_WEBHOOK_TIMEOUT_SECONDS"))
    except httpx.HTTPError as exc:
        return Outcome(started_at, _ms(start), error=f"{type(exc).__name__}: {exc}"[:1000])
    elapsed = _ms(start)
    if 200 <= response.status_code < 300:
        return Outcome(started_at, elapsed, response.status_code)
    return Outcome(started_at, elapsed, response.status_code,
                   error=f"HTTP {response.status_code}: {response.text[:300]}")


def _ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)
