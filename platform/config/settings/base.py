"""Settings shared by every way of running Waybill: Django's own here, each integration in
a small module of its own (imported at the end).

Everything that differs between machines comes from the environment (twelve-factor),
read with django-environ (``environment``). With no variable set, Waybill runs embedded:
one SQLite file per bounded context under ``WAYBILL_DATA_DIR`` and Kombu's in-memory
transport.
"""

from .environment import *  # noqa: F403
from .contexts import *  # noqa: F403
from .bus import *  # noqa: F403
from .limits import *  # noqa: F403
from .orders import *  # noqa: F403
from .realtime import *  # noqa: F403
from .retention import *  # noqa: F403
from .telemetry import *  # noqa: F403
from .webhooks import *  # noqa: F403
from .contexts import CONTEXT_APPS
from .environment import DATA_DIR, WAYBILL_REDIS_URL, env
from .limits import WAYBILL_THROTTLE_RATES, WAYBILL_TRUSTED_PROXIES, throttle_cache

DEBUG = False
SECRET_KEY = env.str("WAYBILL_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("WAYBILL_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "waybill",
    "config",
    *CONTEXT_APPS,
    "frontend",
]

MIDDLEWARE = [
    # Outermost, so every error under /api/ passes it on the way out (config/api.py).
    "config.api.api_json_errors",
    "django.middleware.security.SecurityMiddleware",
    # One correlation id per request for the messages it records (waybill.outbox).
    "waybill.outbox.correlation_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header is what turns "no credentials" into 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.api.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # drf-spectacular's, plus each operation's refusals and their bodies (config/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "config.openapi.ApiSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    # The address a throttle counts against is the one the trusted proxies saw (limits).
    "NUM_PROXIES": WAYBILL_TRUSTED_PROXIES,
    "DEFAULT_THROTTLE_RATES": WAYBILL_THROTTLE_RATES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Waybill API",
    "DESCRIPTION": (
        "Orders, inventory and read models of the Waybill shop. Writes answer 202 and "
        "the outcome arrives on the read side; see README for the message flow. The messages "
        "on the bus (and sent to webhooks) are in the [message catalog](/api/asyncapi/), "
        "also as an [AsyncAPI 3.0 document](/api/asyncapi.json)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("WAYBILL_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler would print every request warning a second time.
        "django": {"handlers": [], "propagate": True},
    },
}

CACHES = throttle_cache(WAYBILL_REDIS_URL)
