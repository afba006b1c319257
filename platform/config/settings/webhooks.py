"""Webhooks (docs/webhooks.md): signed POSTs of public events to endpoints that users
register, retried with backoff."""

from .environment import env

# One POST, all told (resolving, connecting, sending, the answer): a slow receiver holds a
# sender this long at most.
WAYBILL_WEBHOOK_TIMEOUT_SECONDS = env.float("WAYBILL_WEBHOOK_TIMEOUT_SECONDS", default=5.0)
# Tries per delivery before it is failed (an operator may redeliver it); backoff with
# jitter between tries: base * 2**(n-1), capped.
WAYBILL_WEBHOOK_MAX_ATTEMPTS = env.int("WAYBILL_WEBHOOK_MAX_ATTEMPTS", default=8)
WAYBILL_WEBHOOK_RETRY_BASE_SECONDS = env.float("WAYBILL_WEBHOOK_RETRY_BASE_SECONDS", default=5.0)
WAYBILL_WEBHOOK_RETRY_MAX_SECONDS = env.float("WAYBILL_WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
# Deliveries one sweep claims, and how many it sends at once.
WAYBILL_WEBHOOK_BATCH_SIZE = env.int("WAYBILL_WEBHOOK_BATCH_SIZE", default=20)
WAYBILL_WEBHOOK_CONCURRENCY = env.int("WAYBILL_WEBHOOK_CONCURRENCY", default=8)
# Plain http:// to loopback (and nothing private) for local receivers while developing and
# in tests. Unset: on exactly when DEBUG is; the development settings turn it on.
WAYBILL_WEBHOOK_ALLOW_LOOPBACK = env.bool("WAYBILL_WEBHOOK_ALLOW_LOOPBACK", default=None)
WAYBILL_WEBHOOK_MAX_ENDPOINTS = env.int("WAYBILL_WEBHOOK_MAX_ENDPOINTS", default=20)
# Finished deliveries (and their attempts) are forgotten this long after they were created.
WAYBILL_WEBHOOK_RETENTION_SECONDS = env.int("WAYBILL_WEBHOOK_RETENTION_SECONDS", default=14 * 24 * 3600)
