"""In-process tests: the dev settings with fast password hashing and quick retries."""

from .dev import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WAYBILL_RETRY_BASE_SECONDS = 0.0
# The pump relays one transaction at a time: nothing is stamped out of commit order.
WAYBILL_HISTORY_ARCHIVE_SETTLE_SECONDS = 0.0
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
WAYBILL_OTEL_EXPORTER = "none"  # tests install their own in-memory exporter
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"orders.place": "100000/minute",  # noqa: F405
                                                                 "auth": "100000/minute"}}
