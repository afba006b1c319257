"""Settings shared by every way of running Waybill.

Everything that differs between machines comes from the environment (twelve-factor),
read with django-environ. With no variable set, Waybill runs embedded: one SQLite file
per bounded context under ``WAYBILL_DATA_DIR`` and Kombu's in-memory transport.
"""

from pathlib import Path

import environ
from kombu import Exchange, Queue
from django.core.exceptions import ImproperlyConfigured

from waybill import jsonlimits

REPO_DIR = Path(__file__).resolve().parents[3]
env = environ.Env()

DATA_DIR = Path(env.str("WAYBILL_DATA_DIR", default=str(REPO_DIR / "var")))

DEBUG = False
SECRET_KEY = env.str("WAYBILL_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("WAYBILL_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

# The bounded contexts of the platform, and the ones this process hosts: their apps, URLs,
# databases, relays and consumers. Embedded runs all; a service runs one
# (`WAYBILL_CONTEXTS=orders`).
ALL_CONTEXTS = ("orders", "inventory", "readmodels")
WAYBILL_CONTEXTS = tuple(env.list("WAYBILL_CONTEXTS", default=list(ALL_CONTEXTS)))
if unknown := set(WAYBILL_CONTEXTS) - set(ALL_CONTEXTS):
    raise ImproperlyConfigured(f"WAYBILL_CONTEXTS names unknown contexts: {sorted(unknown)}")

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
    *(f"apps.{name}" for name in WAYBILL_CONTEXTS),
    "frontend",
]

MIDDLEWARE = [
    # Outermost, so every error under /api/ passes it on the way out (config/api.py).
    "config.api.api_json_errors",
    "django.middleware.security.SecurityMiddleware",
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


# --- Databases: one per bounded context, plus ``default`` for auth, sessions and admin.
def _database(alias: str) -> dict:
    config = env.db_url(
        f"WAYBILL_{alias.upper()}_DATABASE_URL",
        default=f"sqlite:///{DATA_DIR / f'{alias}.sqlite3'}",
    )
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            # IMMEDIATE takes the write lock at BEGIN, so two writers queue up instead of
            # one failing with "database is locked" when it upgrades a read lock.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif env.bool("WAYBILL_DB_POOL", default=False):
        # Web processes (ASGI): Django runs each request's database work in a fresh async
        # context, so a persistent connection is never reused there and every request
        # would open one; a psycopg pool per process hands them out instead.
        # setdefault: keep what the URL set (e.g. ?sslmode=require).
        # check: a connection the server dropped (a database restart) is replaced when it
        # is handed out, instead of failing the request that gets it.
        from psycopg_pool import ConnectionPool

        config.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1, "max_size": env.int("WAYBILL_DB_POOL_SIZE", default=8), "timeout": 10,
            "check": ConnectionPool.check_connection}
    else:
        # Keep connections between messages (checked before reuse): a new PostgreSQL
        # connection per message held a worker to a few messages per second.
        config["CONN_MAX_AGE"] = env.int("WAYBILL_DB_CONN_MAX_AGE", default=60)
        config["CONN_HEALTH_CHECKS"] = True
    if alias != "default":
        # A context's tests may use its database alone; Django would otherwise make every
        # alias wait for "default" and refuse a test that does not ask for it.
        config["TEST"] = {"DEPENDENCIES": []}
    return config


DATABASES = {alias: _database(alias) for alias in ("default", *WAYBILL_CONTEXTS)}
DATABASE_ROUTERS = ["waybill.routers.ContextRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

# How many proxies stand in front of this server, each adding the address it saw to
# X-Forwarded-For (services mode: 1, the gateway, which also drops what the client sent).
# 0 (embedded, the default): forwarded headers are ignored, by uvicorn (runplatform) and by
# the throttle alike, so a client cannot pick the address its sign-in attempts count against.
WAYBILL_TRUSTED_PROXIES = env.int("WAYBILL_TRUSTED_PROXIES", default=0)

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header is what turns "no credentials" into 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.api.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    # Per user for placing orders, per client address for signing in; over the limit: 429
    # with Retry-After. The address is the one the trusted proxies saw (see below).
    "NUM_PROXIES": WAYBILL_TRUSTED_PROXIES,
    "DEFAULT_THROTTLE_RATES": {
        "orders.place": env.str("WAYBILL_THROTTLE_ORDERS", default="60/minute"),
        "auth": env.str("WAYBILL_THROTTLE_AUTH", default="20/minute"),
    },
}

# --- What a client may send (config/api.py, apps/readmodels/live.py). An order of 20 lines
# is under 2 KB; these bound what a hostile client can make a process hold or walk.
# A request body (JSON or form, API or sign-in): over it, 413.
WAYBILL_REQUEST_MAX_BYTES = env.int("WAYBILL_REQUEST_MAX_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = WAYBILL_REQUEST_MAX_BYTES
# Arrays and objects nested in one JSON body or WebSocket frame: over it, 400 (close 1007).
WAYBILL_JSON_MAX_DEPTH = env.int("WAYBILL_JSON_MAX_DEPTH", default=jsonlimits.DEFAULT_MAX_DEPTH)
# One WebSocket frame from a client (a subscribe is under 200 bytes): over it, close 1009.
# The server (uvicorn's ws_max_size) enforces it too, before the frame is buffered whole.
WAYBILL_WS_MAX_FRAME_BYTES = env.int("WAYBILL_WS_MAX_FRAME_BYTES", default=64 * 1024)
# Live connections (WebSockets and SSE streams together, apps/readmodels/connections.py),
# counted per web process: one user's (a browser tab holds one), and all of the process's.
# Past either: WebSocket close 4429, SSE 429 with Retry-After.
WAYBILL_LIVE_CONNECTIONS_PER_USER = env.int("WAYBILL_LIVE_CONNECTIONS_PER_USER", default=20)
WAYBILL_LIVE_CONNECTIONS_PER_PROCESS = env.int("WAYBILL_LIVE_CONNECTIONS_PER_PROCESS", default=2000)

SPECTACULAR_SETTINGS = {
    "TITLE": "Waybill API",
    "DESCRIPTION": (
        "Orders, inventory and read models of the Waybill shop. Writes answer 202 and "
        "the outcome arrives on the read side; see README for the message flow."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Messaging
WAYBILL_PORT = env.int("WAYBILL_PORT", default=8000)
WAYBILL_BROKER_URL = env.str("WAYBILL_BROKER_URL", default="memory://")
WAYBILL_BROKER_TRANSPORT_OPTIONS = {
    # The in-memory transport polls its queues; 1 s (Kombu's default) would add a second
    # to every hop. RabbitMQ ignores this option.
    "polling_interval": 0.005,
    # Publisher confirms: the relay marks a row sent only after the broker has it.
    "confirm_publish": True,
}
# Partitions per consumer queue (see waybill.bus): 1 = one queue that competing workers
# share; N > 1 = N queues with a single active consumer each, for strict per-aggregate order.
WAYBILL_PARTITIONS = env.int("WAYBILL_PARTITIONS", default=1)
# The consumers a Celery worker runs (empty: all of its contexts'); a bulkhead worker
# runs one, e.g. WAYBILL_CONSUMERS=payments.
WAYBILL_CONSUMERS = tuple(env.list("WAYBILL_CONSUMERS", default=[]))
# Embedded mode declares the bus topology itself. In services mode the launcher declares
# it once with an admin account, and each service's broker user may not configure
# anything but its own task queue.
WAYBILL_BROKER_DECLARE = env.bool("WAYBILL_BROKER_DECLARE", default=True)
WAYBILL_RELAY_SWEEP_SECONDS = env.float("WAYBILL_RELAY_SWEEP_SECONDS", default=2.0)
WAYBILL_RELAY_BATCH_SIZE = env.int("WAYBILL_RELAY_BATCH_SIZE", default=500)
WAYBILL_RELAY_MAX_ATTEMPTS = env.int("WAYBILL_RELAY_MAX_ATTEMPTS", default=10)
# How long the relay waits for the broker to confirm a window of publishes before it
# treats them as failed (they are published again: at least once).
WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS = env.float("WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS", default=10.0)
# Messages a consumer holds unacked at once; small, so a crash redelivers little.
WAYBILL_CONSUMER_PREFETCH = env.int("WAYBILL_CONSUMER_PREFETCH", default=10)
WAYBILL_RETRY_MAX_ATTEMPTS = env.int("WAYBILL_RETRY_MAX_ATTEMPTS", default=5)
WAYBILL_RETRY_BASE_SECONDS = env.float("WAYBILL_RETRY_BASE_SECONDS", default=0.5)
WAYBILL_RETRY_MAX_SECONDS = env.float("WAYBILL_RETRY_MAX_SECONDS", default=60.0)
# A message on the bus larger than this, or nested deeper, is dead-lettered unread; the
# relay refuses to publish a bigger one (every consumer would refuse it).
WAYBILL_MESSAGE_MAX_BYTES = env.int("WAYBILL_MESSAGE_MAX_BYTES", default=1024 * 1024)
WAYBILL_MESSAGE_MAX_DEPTH = env.int("WAYBILL_MESSAGE_MAX_DEPTH", default=32)
# How much of a message's body the admin shows as text (dead letters, inbox, outbox); the
# whole body is a download.
WAYBILL_MESSAGE_PREVIEW_BYTES = env.int("WAYBILL_MESSAGE_PREVIEW_BYTES", default=4096)

# Order size limit, documented in the API schema and README.
WAYBILL_ORDER_MAX_LINES = 20
WAYBILL_ORDER_MAX_QUANTITY = 100

# --- The order saga: how long each step may wait (database time) before it is compensated.
WAYBILL_SAGA_RESERVE_SECONDS = env.float("WAYBILL_SAGA_RESERVE_SECONDS", default=30.0)
WAYBILL_SAGA_PAYMENT_SECONDS = env.float("WAYBILL_SAGA_PAYMENT_SECONDS", default=60.0)
WAYBILL_SAGA_RELEASE_SECONDS = env.float("WAYBILL_SAGA_RELEASE_SECONDS", default=30.0)
# Orders sweeps deadlines about every second while it is connected to the bus; a longer
# gap than this is an outage (broker, or every orders process), and deadlines pause for it.
WAYBILL_SAGA_CLOCK_GAP_SECONDS = env.float("WAYBILL_SAGA_CLOCK_GAP_SECONDS", default=5.0)
WAYBILL_CURRENCY = "EUR"

# How long sent outbox rows and processed inbox rows are kept (waybill/retention.py): the
# inbox is what makes a late duplicate harmless, so it keeps the longer.
WAYBILL_OUTBOX_RETENTION_SECONDS = env.int("WAYBILL_OUTBOX_RETENTION_SECONDS", default=3 * 24 * 3600)
WAYBILL_INBOX_RETENTION_SECONDS = env.int("WAYBILL_INBOX_RETENTION_SECONDS", default=7 * 24 * 3600)

# Read-model change log (apps/readmodels/changes.py): how long changes are kept for
# clients to resume from, and the most sent on one resume before a snapshot is cheaper.
WAYBILL_CHANGES_RETENTION_SECONDS = env.int("WAYBILL_CHANGES_RETENTION_SECONDS", default=24 * 3600)
WAYBILL_CHANGES_RESUME_LIMIT = env.int("WAYBILL_CHANGES_RESUME_LIMIT", default=1000)

# --- Webhooks (apps/readmodels/webhooks, docs/webhooks.md).
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

# --- The payment provider (the sandbox that runplatform and make up start, by default).
WAYBILL_PAYMENT_GATEWAY_URL = env.str("WAYBILL_PAYMENT_GATEWAY_URL", default="")
WAYBILL_PAYMENT_API_KEY = env.str("WAYBILL_PAYMENT_API_KEY", default="")
WAYBILL_PAYMENT_TIMEOUT_SECONDS = env.float("WAYBILL_PAYMENT_TIMEOUT_SECONDS", default=2.0)
WAYBILL_PAYMENT_BREAKER_FAILURES = env.int("WAYBILL_PAYMENT_BREAKER_FAILURES", default=5)
WAYBILL_PAYMENT_BREAKER_RESET_SECONDS = env.float("WAYBILL_PAYMENT_BREAKER_RESET_SECONDS", default=10.0)

WAYBILL_DEMO_ACCOUNTS = False
WAYBILL_DEMO_PASSWORD = env.str("WAYBILL_DEMO_PASSWORD", default="waybill-demo")

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

# --- Celery: JSON only (nothing that accepts pickle), late acks, bounded prefetch.
CELERY_BROKER_URL = WAYBILL_BROKER_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Remote control and task events need broker permissions beyond a service's own queues.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Each context's task queue has an exchange of the same name, so its broker user needs
# rights on its own names only (never the shared default exchange).
CELERY_TASK_QUEUES = [
    Queue(f"waybill.tasks.{context}", Exchange(f"waybill.tasks.{context}", type="direct"),
          routing_key=f"waybill.tasks.{context}", durable=True)
    for context in WAYBILL_CONTEXTS
]
CELERY_TASK_DEFAULT_QUEUE = f"waybill.tasks.{WAYBILL_CONTEXTS[0]}" if WAYBILL_CONTEXTS else "waybill.tasks"
CELERY_BEAT_SCHEDULE = {
    f"{task}-{context}": {
        "task": f"waybill.{task}",
        "schedule": seconds,
        "args": (context,),
        # Exchange and routing key spelled out: given a queue alone, Celery would publish
        # through the default exchange, which no context's broker user may write to.
        "options": {"queue": f"waybill.tasks.{context}", "exchange": f"waybill.tasks.{context}",
                    "routing_key": f"waybill.tasks.{context}", "expires": seconds * 2},
    }
    for context in WAYBILL_CONTEXTS
    for task, seconds in (("relay_sweep", WAYBILL_RELAY_SWEEP_SECONDS),)
}

WAYBILL_REDIS_URL = env.str("WAYBILL_REDIS_URL", default="")

# --- Cache (throttle counters): Redis when configured, so every process of a service
# counts together; this process's memory otherwise.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": WAYBILL_REDIS_URL}
        if WAYBILL_REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Channels: Redis when configured, so a worker process can push to browsers connected
# to a web process; in memory (one process) otherwise.
CHANNEL_LAYERS = {
    "default": (
        # A socket timeout above channels_redis's own 5 s wait: with redis-py's default of 5 s
        # an idle socket's receive loop times out and the browser's socket is dropped
        # (django/channels_redis#422).
        {"BACKEND": "channels_redis.core.RedisChannelLayer",
         "CONFIG": {"hosts": [{"address": WAYBILL_REDIS_URL, "socket_timeout": 30}]}}
        if WAYBILL_REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# --- OpenTelemetry: "console" in development (dev.py), "otlp" (OTEL_EXPORTER_OTLP_*
# variables) in production, "none" to switch it off.
WAYBILL_OTEL_EXPORTER = env.str("WAYBILL_OTEL_EXPORTER", default="none")
WAYBILL_OTEL_CONSOLE_FILE = env.str("WAYBILL_OTEL_CONSOLE_FILE", default="")
WAYBILL_SERVICE_NAME = env.str("WAYBILL_SERVICE_NAME", default="waybill-" + "-".join(WAYBILL_CONTEXTS or ["shell"]))

# --- Supervision (services mode under `make up` and the services tests): the control
# interface of the supervisor that runs this process (unix:///.../supervisor.sock). /readyz
# and the operations report name the processes of this process's contexts that keep
# crashing. Empty (embedded mode, compose): nothing to ask.
WAYBILL_SUPERVISOR_URL = env.str("WAYBILL_SUPERVISOR_URL", default="")
