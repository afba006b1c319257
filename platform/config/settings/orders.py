"""The shop's rules: order limits, the order saga's deadlines, the payment provider."""

import re

from django.core.exceptions import ImproperlyConfigured

from .environment import env

# Order size limit, documented in the API schema and README.
WAYBILL_ORDER_MAX_LINES = 20
WAYBILL_ORDER_MAX_QUANTITY = 100
# ISO 4217: what the shop's prices are in; each order keeps the one it was placed in.
WAYBILL_CURRENCY = env.str("WAYBILL_CURRENCY", default="EUR")
if not re.fullmatch(r"[A-Z]{3}", WAYBILL_CURRENCY):
    raise ImproperlyConfigured(f"WAYBILL_CURRENCY must be an ISO 4217 code such as EUR, not {WAYBILL_CURRENCY!r}")

# --- The order saga: how long each step may wait (database time) before it is compensated.
WAYBILL_SAGA_RESERVE_SECONDS = env.float("WAYBILL_SAGA_RESERVE_SECONDS", default=30.0)
WAYBILL_SAGA_PAYMENT_SECONDS = env.float("WAYBILL_SAGA_PAYMENT_SECONDS", default=60.0)
WAYBILL_SAGA_RELEASE_SECONDS = env.float("WAYBILL_SAGA_RELEASE_SECONDS", default=30.0)
# Orders sweeps deadlines about every second while it is connected to the bus; a longer
# gap than this is an outage (broker, or every orders process), and deadlines pause for it.
WAYBILL_SAGA_CLOCK_GAP_SECONDS = env.float("WAYBILL_SAGA_CLOCK_GAP_SECONDS", default=5.0)

# --- The payment provider (the sandbox that runplatform and make up start, by default).
WAYBILL_PAYMENT_GATEWAY_URL = env.str("WAYBILL_PAYMENT_GATEWAY_URL", default="")
WAYBILL_PAYMENT_API_KEY = env.str("WAYBILL_PAYMENT_API_KEY", default="")
WAYBILL_PAYMENT_TIMEOUT_SECONDS = env.float("WAYBILL_PAYMENT_TIMEOUT_SECONDS", default=2.0)
WAYBILL_PAYMENT_BREAKER_FAILURES = env.int("WAYBILL_PAYMENT_BREAKER_FAILURES", default=5)
WAYBILL_PAYMENT_BREAKER_RESET_SECONDS = env.float("WAYBILL_PAYMENT_BREAKER_RESET_SECONDS", default=10.0)

# Demo customers and staff (`make run`); the development settings turn them on.
WAYBILL_DEMO_ACCOUNTS = False
WAYBILL_DEMO_PASSWORD = env.str("WAYBILL_DEMO_PASSWORD", default="waybill-demo")
