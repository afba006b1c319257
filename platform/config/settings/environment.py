"""What every settings module reads: the environment (twelve-factor, with django-environ),
the folders, and the addresses of the servers a process talks to."""

from pathlib import Path

import environ

REPO_DIR = Path(__file__).resolve().parents[3]
env = environ.Env()

DATA_DIR = Path(env.str("WAYBILL_DATA_DIR", default=str(REPO_DIR / "var")))

# The broker (RabbitMQ in services mode; Kombu's in-memory transport embedded) and Redis
# (push across processes, shared throttle counters; none embedded).
WAYBILL_BROKER_URL = env.str("WAYBILL_BROKER_URL", default="memory://")
WAYBILL_REDIS_URL = env.str("WAYBILL_REDIS_URL", default="")
