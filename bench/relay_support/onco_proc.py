"""(a) ``transaction.on_commit`` + Celery ``delay()``, in a Django process of its own
(settings: ``bench.relay_support.django_settings``):

    python -m bench.relay_support.onco_proc migrate | reset
    python -m bench.relay_support.onco_proc burst N PROGRESS      N messages as fast as one thread can
    python -m bench.relay_support.onco_proc write RATE SECONDS WORKERS OUT PROGRESS
    python -m bench.relay_support.onco_proc ids OUT                the committed rows' message ids
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.relay_support.django_settings")


def _setup():
    import django

    django.setup()


def _sender(progress=None):
    """One request's work: commit a row, then (on commit) send the task."""
    from django.db import transaction

    from .celery_app import shipment_recorded
    from .shop.models import Shipment

    sent = [0]

    def send(env: dict) -> tuple[str, float]:
        committed = [0.0]
        with transaction.atomic():
            transaction.on_commit(lambda: committed.__setitem__(0, time.time()))
            transaction.on_commit(lambda: shipment_recorded.delay(env))
            Shipment.objects.create(message_id=env["id"], payload=env)
        if progress is not None:
            sent[0] += 1
            progress.set(sent[0])
        return env["id"], committed[0]

    return send


def burst(n: int, progress_path: str) -> dict:
    from .common import Progress, envelope

    _setup()
    envelopes = [envelope(i) for i in range(n)]
    send = _sender(Progress(progress_path))
    began = time.perf_counter()
    for env in envelopes:
        send(env)
    return {"published": n, "seconds": time.perf_counter() - began}


def write(rate: float, seconds: float, workers: int, out: str, progress_path: str) -> dict:
    _setup()
    from django.db import connections

    from .common import Progress, envelope, open_loop

    send = _sender()
    result = open_loop(rate=rate, seconds=seconds, workers=workers, send=lambda i: send(envelope(i)),
                       out=out, progress=Progress(progress_path))
    connections.close_all()
    return result


def main(argv: list[str]) -> None:
    from .common import committed_ids, emit

    command, *args = argv
    if command == "migrate":
        _setup()
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
        emit({"migrated": True})
    elif command == "reset":
        _setup()
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE bench_shop_shipment, published")
        emit({"reset": True})
    elif command == "burst":
        emit(burst(int(args[0]), args[1]))
    elif command == "write":
        emit(write(float(args[0]), float(args[1]), int(args[2]), args[3], args[4]))
    elif command == "ids":
        _setup()
        from .shop.models import Shipment

        emit(committed_ids(args[0], [str(i) for i in Shipment.objects.values_list("message_id", flat=True)]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
