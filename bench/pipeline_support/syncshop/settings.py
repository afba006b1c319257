"""Waybill's base settings on ONE database: the orders and inventory models side by side,
no context router, no outbox relay or consumers (nothing starts them), no Redis.

Environment: ``SYNCSHOP_DATABASE_URL`` (PostgreSQL), ``WAYBILL_PAYMENT_GATEWAY_URL`` and
``WAYBILL_PAYMENT_API_KEY`` (the payment sandbox), ``WAYBILL_CONTEXTS=orders,inventory``
(set by the launcher before Django reads the base settings).
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = False
SECRET_KEY = env.str("WAYBILL_SECRET_KEY", default="sync-baseline-benchmark-key-not-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# One database for everything (auth, tokens, orders, stock): one connection, one transaction.
# Connections from a psycopg pool, as Waybill's web processes take theirs (launcher.stack
# sets WAYBILL_DB_POOL for them), so neither side pays a connection per request.
DATABASES = {"default": env.db_url("SYNCSHOP_DATABASE_URL")}
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 8, "timeout": 10}
DATABASE_ROUTERS: list[str] = []
ROOT_URLCONF = "bench.pipeline_support.syncshop.urls"
WAYBILL_OTEL_EXPORTER = "none"
