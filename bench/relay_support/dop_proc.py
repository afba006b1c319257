"""(b) django-outbox-pattern 3.2.x, in a Django process of its own (settings:
``bench.relay_support.django_settings``), publishing over STOMP to RabbitMQ:

    python -m bench.relay_support.dop_proc fill N        N rows in its ``published`` table (COPY)
    python -m bench.relay_support.dop_proc drain [N]     (fill N, then) time its producer's pass
    python -m bench.relay_support.dop_proc write RATE SECONDS WORKERS OUT PROGRESS
    python -m bench.relay_support.dop_proc status | ids OUT

The long-running publisher of the latency and kill phases is the package's own command:
``python -m django publish``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.relay_support.django_settings")

# Straight into the bench's durable quorum queue (RabbitMQ STOMP: /amq/queue/<existing queue>).
DESTINATION = "/amq/queue/bench.dop"
# Persistent messages, as for the others (the STOMP plugin maps it to delivery mode 2).
HEADERS = {"persistent": "true"}


def _setup():
    import django

    django.setup()


def fill(n: int) -> dict:
    _setup()
    from django.db import connection
    from django.utils import timezone
    from django_outbox_pattern.headers import get_message_headers
    from django_outbox_pattern.models import Published

    from .common import envelope

    now = timezone.now()
    expires = now + timedelta(days=1)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY published (id, destination, body, added, expires_at, retry, status, headers) FROM STDIN"
        ) as copy:
            for i in range(n):
                env = envelope(i)
                row = Published(id=uuid.uuid4(), destination=DESTINATION, body=env, headers=dict(HEADERS))
                headers = get_message_headers(row)  # what Published.save() would store
                copy.write_row((row.id, DESTINATION, json.dumps(env), now, expires, 0, 1, json.dumps(headers)))
        cursor.execute("ANALYZE published")
    return {"filled": n, "seconds": time.perf_counter() - began}


def _scheduled() -> int:
    from django_outbox_pattern.choices import StatusChoice
    from django_outbox_pattern.models import Published

    return Published.objects.filter(status=StatusChoice.SCHEDULE).count()


def drain(fill_first: int = 0) -> dict:
    """One pass of the package's producer (what its ``publish`` command loops over),
    without the 1-second sleep it takes after every pass."""
    if fill_first:
        fill(fill_first)
    _setup()
    from django_outbox_pattern.factories import factory_producer

    producer = factory_producer()
    producer._waiting = lambda: None  # the idle sleep between passes; not publishing work
    before = _scheduled()
    began = time.perf_counter()
    passes = 0
    while _scheduled():
        producer.publish_message_from_database()
        passes += 1
    seconds = time.perf_counter() - began
    return {"published": before, "seconds": seconds, "passes": passes, "unsent": _scheduled()}


def write(rate: float, seconds: float, workers: int, out: str, progress_path: str) -> dict:
    _setup()
    from django.db import connections, transaction
    from django_outbox_pattern.models import Published

    from .common import Progress, envelope, open_loop


    def send(i: int) -> tuple[str, float]:
        env = envelope(i)
        committed = [0.0]
        with transaction.atomic():
            transaction.on_commit(lambda: committed.__setitem__(0, time.time()))
            Published.objects.create(destination=DESTINATION, body=env, headers=dict(HEADERS))
        return env["id"], committed[0]

    result = open_loop(rate=rate, seconds=seconds, workers=workers, send=send, out=out,
                       progress=Progress(progress_path))
    connections.close_all()
    return result


def main(argv: list[str]) -> None:
    from .common import committed_ids, emit

    command, *args = argv
    if command == "fill":
        emit(fill(int(args[0])))
    elif command == "drain":
        emit(drain(int(args[0]) if args else 0))
    elif command == "write":
        emit(write(float(args[0]), float(args[1]), int(args[2]), args[3], args[4]))
    elif command == "status":
        _setup()
        from django_outbox_pattern.models import Published

        emit({"total": Published.objects.count(), "unsent": _scheduled()})
    elif command == "ids":
        _setup()
        from django_outbox_pattern.models import Published

        emit(committed_ids(args[0], [body["id"] for body in Published.objects.values_list("body", flat=True)]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
