"""Django settings of the comparison systems (a) on_commit + Celery delay() and
(b) django-outbox-pattern: their own small project on the same PostgreSQL server and the
same RabbitMQ as Waybill. Addresses come from the environment (set by bench.relay)."""

import os
from urllib.parse import unquote, urlparse

_db = urlparse(os.environ["BENCH_DATABASE_URL"])
_mq = urlparse(os.environ["BENCH_BROKER_URL"])

SECRET_KEY = "bench-relay-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_outbox_pattern",
    "bench.relay_support.shop",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path[1:],
        "USER": unquote(_db.username),
        "PASSWORD": unquote(_db.password),
        "HOST": _db.hostname,
        "PORT": _db.port,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# django-outbox-pattern: its producer talks STOMP to RabbitMQ's STOMP plugin.
DJANGO_OUTBOX_PATTERN = {
    "DEFAULT_STOMP_HOST_AND_PORTS": [(_mq.hostname, int(os.environ["BENCH_STOMP_PORT"]))],
    "DEFAULT_STOMP_USERNAME": unquote(_mq.username),
    "DEFAULT_STOMP_PASSCODE": unquote(_mq.password),
    "DEFAULT_STOMP_VHOST": unquote(_mq.path[1:]) or "/",
}
# The package logs every message at INFO; keep the bench's output to warnings.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
