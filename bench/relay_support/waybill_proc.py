"""Waybill's side, run with the product's settings and environment (launcher.stack.Stack.env):

    python -m bench.relay_support.waybill_proc fill N          bulk-insert N outbox rows (COPY)
    python -m bench.relay_support.waybill_proc drain [N]       (fill N, then) time Relay(orders).drain()
    python -m bench.relay_support.waybill_proc write RATE SECONDS WORKERS OUT PROGRESS
                                                               outbox_record() at a fixed rate
    python -m bench.relay_support.waybill_proc status | reset | ids OUT

The long-running relay of the latency and kill phases is the product's own
``manage.py runrelay``, not this module.
"""

from __future__ import annotations

import cProfile
import json
import os
import sys
import time
import uuid
from decimal import Decimal


def _setup():
    import django

    django.setup()
    from waybill import contexts

    return contexts.get("orders")


def check_envelope() -> None:
    """The bench's envelope is one the product accepts (registered type, valid payload)."""
    from waybill.messages import parse

    from .common import envelope

    parse(json.dumps(envelope()))


def fill(n: int) -> dict:
    from django.db import connections
    from django.utils import timezone

    from .common import envelope

    ctx = _setup()
    check_envelope()
    table = ctx.outbox._meta.db_table
    now = timezone.now()
    began = time.perf_counter()
    with connections[ctx.database].cursor() as cursor:
        with cursor.cursor.copy(
            f"COPY {table} (message_id, message_type, kind, aggregate_id, aggregate_version, envelope,"
            " created_at, publish_attempts, last_error) FROM STDIN"
        ) as copy:
            for i in range(n):
                env = envelope(i)
                copy.write_row((env["id"], env["type"], "event", env["aggregate_id"], 1, json.dumps(env), now, 0, ""))
        cursor.execute(f"ANALYZE {table}")
    return {"filled": n, "seconds": time.perf_counter() - began}


def drain(fill_first: int = 0) -> dict:
    if fill_first:
        fill(fill_first)
    ctx = _setup()
    from waybill.relay import Relay

    relay = Relay(ctx)
    profile_path = os.environ.get("BENCH_RELAY_PROFILE")
    profiler = cProfile.Profile() if profile_path else None
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    published = relay.drain()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_path)
    seconds = time.perf_counter() - began
    relay.close()
    return {"published": published, "seconds": seconds, "unsent": _unsent(ctx), "relay": type(relay).__name__}


def _unsent(ctx) -> int:
    return ctx.outbox.objects.using(ctx.database).filter(sent_at__isnull=True).count()


def status() -> dict:
    ctx = _setup()
    rows = ctx.outbox.objects.using(ctx.database)
    return {"total": rows.count(), "unsent": _unsent(ctx)}


def ids(out: str) -> dict:
    ctx = _setup()
    from .common import committed_ids

    rows = ctx.outbox.objects.using(ctx.database)
    return committed_ids(out, [str(i) for i in rows.values_list("message_id", flat=True)])


def reset() -> dict:
    from django.db import connections

    ctx = _setup()
    with connections[ctx.database].cursor() as cursor:
        cursor.execute(f"TRUNCATE {ctx.outbox._meta.db_table}")
    return {"reset": True}


def write(rate: float, seconds: float, workers: int, out: str, progress_path: str) -> dict:
    """What a request thread does: one transaction recording one event in the outbox
    (the product's ``outbox_record``, which also sends pg_notify to wake relays)."""
    ctx = _setup()
    from django.db import connections, transaction

    from apps.orders.contracts import Money, OrderLine, OrderPlaced
    from waybill.outbox import outbox_record

    from .common import Progress, open_loop

    def euros(amount: str) -> Money:
        return Money(amount=Decimal(amount), currency="EUR")

    lines = [OrderLine(sku="KETTLE-1", name="Electric kettle", quantity=2, unit_price=euros("24.90")),
             OrderLine(sku="MUG-3", name="Stoneware mug", quantity=4, unit_price=euros("7.50"))]

    def send(i: int) -> tuple[str, float]:
        order_id = uuid.uuid4()
        committed = [0.0]
        with transaction.atomic(using=ctx.database):
            # Registered first, so it runs first: the moment the commit returned.
            transaction.on_commit(lambda: committed.__setitem__(0, time.time()), using=ctx.database)
            env = outbox_record(
                context="orders",
                message=OrderPlaced(order_id=order_id, customer_id=1 + i % 1000, status="PENDING",
                                    lines=lines, total=euros("79.80")),
                aggregate_id=str(order_id), aggregate_version=1)
        return str(env.id), committed[0]

    result = open_loop(rate=rate, seconds=seconds, workers=workers, send=send, out=out,
                       progress=Progress(progress_path))
    connections.close_all()
    return result


def main(argv: list[str]) -> None:
    from .common import emit

    command, *args = argv
    if command == "fill":
        emit(fill(int(args[0])))
    elif command == "drain":
        emit(drain(int(args[0]) if args else 0))
    elif command == "write":
        emit(write(float(args[0]), float(args[1]), int(args[2]), args[3], args[4]))
    elif command == "status":
        emit(status())
    elif command == "reset":
        emit(reset())
    elif command == "ids":
        emit(ids(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
