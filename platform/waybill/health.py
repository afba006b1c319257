"""Liveness and readiness for load balancers and the launcher."""

from django.conf import settings
from django.db import connections
from django.http import JsonResponse

from . import bus


def healthz(request):
    """Alive: the process answers. Checks nothing else, so a broker outage does not get
    every web process restarted."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Ready: this process's databases and the broker answer."""
    checks: dict[str, str] = {}
    for alias in ("default", *settings.WAYBILL_CONTEXTS):
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            checks[f"database:{alias}"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks[f"database:{alias}"] = f"error: {exc}"
    try:
        with bus.connect() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {exc}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)
