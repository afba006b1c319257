"""What a client may send, and how often (config/api.py, apps/readmodels/live/connections.py).
An order of 20 lines is under 2 KB; these bound what a hostile client can make a process
hold or walk."""

from waybill import jsonlimits

from .environment import env

# How many proxies stand in front of this server, each adding the address it saw to
# X-Forwarded-For (services mode: 1, the gateway, which also drops what the client sent).
# 0 (embedded, the default): forwarded headers are ignored, by uvicorn (runplatform) and by
# the throttle alike, so a client cannot pick the address its sign-in attempts count against.
WAYBILL_TRUSTED_PROXIES = env.int("WAYBILL_TRUSTED_PROXIES", default=0)

# Per user for placing orders, per client address for signing in; over the limit: 429
# with Retry-After (REST_FRAMEWORK's rates, config/settings/base.py).
WAYBILL_THROTTLE_RATES = {
    "orders.place": env.str("WAYBILL_THROTTLE_ORDERS", default="60/minute"),
    "auth": env.str("WAYBILL_THROTTLE_AUTH", default="20/minute"),
}


def throttle_cache(redis_url: str) -> dict:
    """CACHES, which hold the throttles' counters: in Redis when configured, so every process
    of a service counts together; in this process's memory otherwise.

    django-redis rather than Django's own RedisCache: Django's keeps its connection pool on
    the cache object, and under ASGI every request makes its own cache objects (they live in
    the request task's context), so each request opened a Redis connection that only garbage
    collection closed (Django ticket #35651; the soak run saw the web's and Redis's open files
    climb and fall). django-redis keeps one pool per process."""
    if not redis_url:
        return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return {"default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": redis_url,
        # A Redis that stops answering fails a request's throttle check in seconds, not never.
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 5, "SOCKET_TIMEOUT": 5},
    }}


# A request body (JSON or form, API or sign-in): over it, 413.
WAYBILL_REQUEST_MAX_BYTES = env.int("WAYBILL_REQUEST_MAX_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = WAYBILL_REQUEST_MAX_BYTES
# Arrays and objects nested in one JSON body or WebSocket frame: over it, 400 (close 1007).
WAYBILL_JSON_MAX_DEPTH = env.int("WAYBILL_JSON_MAX_DEPTH", default=jsonlimits.DEFAULT_MAX_DEPTH)
# One WebSocket frame from a client (a subscribe is under 200 bytes): over it, close 1009.
# The server (uvicorn's ws_max_size) enforces it too, before the frame is buffered whole.
WAYBILL_WS_MAX_FRAME_BYTES = env.int("WAYBILL_WS_MAX_FRAME_BYTES", default=64 * 1024)
# Live connections (WebSockets and SSE streams together), counted per web process: one
# user's (a browser tab holds one), and all of the process's. Past either: WebSocket close
# 4429, SSE 429 with Retry-After.
WAYBILL_LIVE_CONNECTIONS_PER_USER = env.int("WAYBILL_LIVE_CONNECTIONS_PER_USER", default=20)
WAYBILL_LIVE_CONNECTIONS_PER_PROCESS = env.int("WAYBILL_LIVE_CONNECTIONS_PER_PROCESS", default=2000)
