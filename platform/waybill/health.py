"""Liveness and readiness for load balancers and the launcher."""

import logging

from django.conf import settings
from django.db import connections
from django.http import JsonResponse

from . import bus, supervisor

log = logging.getLogger(__name__)


def healthz(request):
    """Alive: the process answers. Checks nothing else, so a broker outage does not get
    every web process restarted."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Ready: this process's databases and the broker answer, and, under a supervisor, no
    process of its contexts keeps crashing (``process:<name>``: BACKOFF, FATAL or CRASH_LOOP)
    unless another replica of it runs and does its work."""
    checks: dict[str, str] = {}
    for alias in ("default", *settings.WAYBILL_CONTEXTS):
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            checks[f"database:{alias}"] = "ok"
        except Exception:
            # The details (hosts, roles) go to the log, not to whoever asks through the gateway.
            log.exception("readyz: database %s unavailable", alias)
            checks[f"database:{alias}"] = "unavailable"
    try:
        with bus.connect() as connection:
            connection.ensure_connection(max_retries=bus.retries_for_every_node(connection), timeout=2)
        checks["broker"] = "ok"
    except Exception:
        log.exception("readyz: broker unavailable")
        checks["broker"] = "unavailable"
    try:
        checks |= {f"process:{name}": state for name, state in supervisor.crashing(
            settings.WAYBILL_CONTEXTS, unless_a_replica_runs=True).items()}
    except supervisor.SupervisorUnavailable:
        log.exception("readyz: supervisor unavailable")
        checks["supervisor"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)
