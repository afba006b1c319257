"""Production: every secret and address from the environment, failing fast when missing."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES, env


def _required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"Production settings need the environment variable {name}.")
    return value


SECRET_KEY = _required("WAYBILL_SECRET_KEY")
ALLOWED_HOSTS = env.list("WAYBILL_ALLOWED_HOSTS", default=[]) or [_required("WAYBILL_ALLOWED_HOSTS")]
WAYBILL_DEMO_ACCOUNTS = False
# No silent SQLite or in-memory broker in production: every address must be given.
for _alias in DATABASES:
    _required(f"WAYBILL_{_alias.upper()}_DATABASE_URL")
WAYBILL_BROKER_URL = _required("WAYBILL_BROKER_URL")
# Split into services, processes share push, throttle counters and the circuit breaker
# through Redis; without it each would silently keep its own.
WAYBILL_REDIS_URL = _required("WAYBILL_REDIS_URL")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("WAYBILL_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("WAYBILL_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("WAYBILL_CSRF_TRUSTED_ORIGINS", default=[])
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
