"""Webhook settings. Each may be set in Django settings (tests do) or the environment.

They live here rather than in config/settings/base.py only to keep this slice
self-contained; the names follow the project's ``WAYBILL_*`` convention either way."""

from __future__ import annotations

import environ
from django.conf import settings

_env = environ.Env()

DEFAULTS = {
    # Per attempt: connect + read. Short, so one slow receiver ties up a sender briefly.
    "WAYBILL_WEBHOOK_TIMEOUT_SECONDS": lambda: _env.float("WAYBILL_WEBHOOK_TIMEOUT_SECONDS", default=5.0),
    # Tries per delivery before it is FAILED (an operator may redeliver it).
    "WAYBILL_WEBHOOK_MAX_ATTEMPTS": lambda: _env.int("WAYBILL_WEBHOOK_MAX_ATTEMPTS", default=8),
    # Exponential backoff with jitter between tries: base * 2**(n-1), capped.
    "WAYBILL_WEBHOOK_RETRY_BASE_SECONDS": lambda: _env.float("WAYBILL_WEBHOOK_RETRY_BASE_SECONDS", default=5.0),
    "WAYBILL_WEBHOOK_RETRY_MAX_SECONDS": lambda: _env.float("WAYBILL_WEBHOOK_RETRY_MAX_SECONDS", default=3600.0),
    # Deliveries one sweep claims, and how many it sends at once.
    "WAYBILL_WEBHOOK_BATCH_SIZE": lambda: _env.int("WAYBILL_WEBHOOK_BATCH_SIZE", default=20),
    "WAYBILL_WEBHOOK_CONCURRENCY": lambda: _env.int("WAYBILL_WEBHOOK_CONCURRENCY", default=8),
    # Plain http:// to a loopback address (127.0.0.0/8, ::1, localhost), for local
    # receivers while developing and in tests. Default: on only with DEBUG (never in
    # production settings). Every other URL must be https:// to a public host.
    "WAYBILL_WEBHOOK_ALLOW_LOOPBACK": lambda: _env.bool("WAYBILL_WEBHOOK_ALLOW_LOOPBACK", default=settings.DEBUG),
    # Endpoints one user may have at once.
    "WAYBILL_WEBHOOK_MAX_ENDPOINTS": lambda: _env.int("WAYBILL_WEBHOOK_MAX_ENDPOINTS", default=20),
}


def setting(name: str):
    if hasattr(settings, name):
        return getattr(settings, name)
    return DEFAULTS[name]()
