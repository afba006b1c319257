"""The live read side: the channel layer that carries pushes to browsers, and the change
log that clients resume from (apps/readmodels/live/)."""

from .environment import WAYBILL_REDIS_URL, env

# Channels: Redis when configured, so a worker process can push to browsers connected to
# a web process; in memory (one process) otherwise.
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

# The change log: how long changes are kept for clients to resume from, and the most sent
# on one resume before a snapshot is cheaper.
WAYBILL_CHANGES_RETENTION_SECONDS = env.int("WAYBILL_CHANGES_RETENTION_SECONDS", default=24 * 3600)
WAYBILL_CHANGES_RESUME_LIMIT = env.int("WAYBILL_CHANGES_RESUME_LIMIT", default=1000)
