"""The embedded default: one process, SQLite per context, in-memory broker, demo data."""

from .base import *  # noqa: F403
from .base import DATA_DIR, env

# Off unless asked for (WAYBILL_DEBUG=1): `make run` listens where anyone on the machine
# can reach it, and Django's debug page shows every setting's name to whoever caused it.
DEBUG = env.bool("WAYBILL_DEBUG", default=False)
# A development key, never used by production settings (which demand WAYBILL_SECRET_KEY).
SECRET_KEY = env.str("WAYBILL_SECRET_KEY", default="waybill-embedded-development-key-not-secret")
WAYBILL_DEMO_ACCOUNTS = True
# Whatever DEBUG says: a receiver on this machine is how development and the tests see
# webhooks.
WAYBILL_WEBHOOK_ALLOW_LOOPBACK = env.bool("WAYBILL_WEBHOOK_ALLOW_LOOPBACK", default=True)
# Traces go to a file rather than the terminal, where they would bury the logs.
WAYBILL_OTEL_EXPORTER = env.str("WAYBILL_OTEL_EXPORTER", default="console")
WAYBILL_OTEL_CONSOLE_FILE = env.str("WAYBILL_OTEL_CONSOLE_FILE", default=str(DATA_DIR / "traces.log"))

# Serve static files straight from the apps, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
(DATA_DIR / "static").mkdir(parents=True, exist_ok=True)
