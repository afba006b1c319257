"""The bounded contexts, from their manifests (``apps/<ctx>/manifest.py``, see
``waybill.manifest``), and the ones this process hosts: their apps, and one database per
context. Embedded runs all; a service runs one (``WAYBILL_CONTEXTS=orders``)."""

from django.core.exceptions import ImproperlyConfigured

from waybill import manifest

from .environment import DATA_DIR, env

# Every context of the platform, by name (its manifest).
WAYBILL_MANIFESTS = manifest.discover()
ALL_CONTEXTS = tuple(WAYBILL_MANIFESTS)
WAYBILL_CONTEXTS = tuple(env.list("WAYBILL_CONTEXTS", default=list(ALL_CONTEXTS)))
if unknown := set(WAYBILL_CONTEXTS) - set(ALL_CONTEXTS):
    raise ImproperlyConfigured(f"WAYBILL_CONTEXTS names unknown contexts: {sorted(unknown)}")
CONTEXT_APPS = [WAYBILL_MANIFESTS[name].app for name in WAYBILL_CONTEXTS]


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


# ``default``: auth, sessions and admin; then each hosted context's own.
DATABASES = {alias: _database(alias)
             for alias in dict.fromkeys(("default", *(WAYBILL_MANIFESTS[name].database for name in WAYBILL_CONTEXTS)))}
DATABASE_ROUTERS = ["waybill.routers.ContextRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
