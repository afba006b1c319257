"""Seed inventory and publish the consumer scenario's backlog, with the product's settings:

    python -m bench.consume_support.backlog seed PRODUCTS
    python -m bench.consume_support.backlog publish waybill N URL       Waybill envelopes
    python -m bench.consume_support.backlog publish celery_task N URL   Celery task messages

Every message is the command inventory's consumer handles, ``inventory.reserve_stock``
(schema 1) for a new order of two lines, each line on a different seeded product. Both
systems get the same commands (the same generator); only the wire format differs: a
Waybill envelope on the exchange and routing key ``waybill.bus.route`` gives, or a Celery
(protocol 2, JSON) task message whose one argument is that envelope, on the comparison's
queue. Persistent, publisher confirms awaited once per window (the publish is not what is
measured: the backlog is in the queue before any consumer starts).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

WINDOW = 500
SKU = "BENCH-{:03d}"
# Enough that no reservation is ever refused: a full run reserves at most 3 units per
# message per product.
ON_HAND = 1_000_000_000


def _setup():
    import django

    django.setup()


def seed(products: int) -> dict:
    """Products through inventory's own service (what staff would do)."""
    _setup()
    from decimal import Decimal

    from apps.inventory.services import product_create

    for i in range(products):
        product_create(sku=SKU.format(i), name=f"Bench product {i}", price=Decimal("9.90"), on_hand=ON_HAND)
    return {"products": products}


def commands(n: int, products: int):
    """``n`` (envelope dict, JSON body) pairs of ``inventory.reserve_stock``, valid as the
    product registers it (built with its own Envelope and message classes)."""
    from apps.inventory.contracts import ReserveStock, StockLine
    from waybill.messages import Envelope

    now = datetime.now(UTC)
    for i in range(n):
        order_id = uuid.uuid4()
        first, second = i % products, (i * 7 + 1) % products
        if second == first:
            second = (first + 1) % products
        command = ReserveStock(order_id=order_id, lines=[StockLine(sku=SKU.format(first), quantity=1),
                                                         StockLine(sku=SKU.format(second), quantity=2)])
        envelope = Envelope(id=uuid.uuid4(), type=command.message_type, schema_version=command.schema_version,
                            aggregate_id=str(order_id), aggregate_version=1, occurred_at=now,
                            correlation_id=uuid.uuid4(), payload=command.model_dump(mode="json"))
        yield envelope, envelope.to_json()


class _Confirms:
    """Publisher confirms on a py-amqp channel, awaited once per window."""

    def __init__(self, connection, channel):
        self.connection, self.channel = connection, channel
        channel.confirm_select()
        self.acked = 0
        self.nacked: list[int] = []
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(lambda tag, multiple: self.nacked.append(tag))

    def _ack(self, delivery_tag: int, multiple: bool) -> None:
        self.acked = max(self.acked, delivery_tag)

    def wait(self, published: int) -> None:
        deadline = time.monotonic() + 60
        while self.acked < published:
            if time.monotonic() > deadline:
                raise RuntimeError(f"confirms: {self.acked} of {published} after 60 s")
            self.connection.drain_events(timeout=10)
        if self.nacked:
            raise RuntimeError(f"{len(self.nacked)} publishes nacked")


def publish_waybill(n: int, url: str, products: int) -> dict:
    """As Waybill's relay publishes a row (bus.route, the same properties)."""
    _setup()
    from kombu import Connection, Producer
    from waybill import bus

    connection = Connection(url)
    connection.ensure_connection(max_retries=3)
    channel = connection.default_channel
    confirms = _Confirms(connection.connection, channel)
    producer = Producer(channel)
    began = time.perf_counter()
    published = 0
    for envelope, body in commands(n, products):
        exchange, routing_key = bus.route(envelope.type, envelope.schema_version, envelope.aggregate_id)
        producer.publish(body, exchange=exchange.name, routing_key=routing_key, content_type=bus.JSON,
                         content_encoding="utf-8", delivery_mode=2, message_id=str(envelope.id),
                         headers={"traceparent": ""}, retry=False)
        published += 1
        if published % WINDOW == 0:
            confirms.wait(published)
    confirms.wait(published)
    seconds = time.perf_counter() - began
    connection.release()
    return {"published": published, "seconds": seconds, "exchange": exchange.name, "routing_key": routing_key}


def publish_celery_task(n: int, url: str, products: int) -> dict:
    """As ``task.apply_async`` sends one (Celery builds the message), on a channel in
    confirm mode whose confirms are awaited once per window rather than per message."""
    _setup()
    from .celery_app import app, reserve_stock

    began = time.perf_counter()
    published = 0
    # Confirms once per window (below), not Kombu's one per publish.
    with app.connection_for_write(transport_options={"confirm_publish": False}) as connection:
        connection.ensure_connection(max_retries=3)
        channel = connection.default_channel
        confirms = _Confirms(connection.connection, channel)
        producer = app.amqp.Producer(channel)
        for envelope, body in commands(n, products):
            reserve_stock.apply_async((json.loads(body),), producer=producer, retry=False)
            published += 1
            if published % WINDOW == 0:
                confirms.wait(published)
        confirms.wait(published)
    return {"published": published, "seconds": time.perf_counter() - began}


def main(argv: list[str]) -> None:
    from bench.relay_support.common import emit

    command, *args = argv
    if command == "seed":
        emit(seed(int(args[0])))
    elif command == "publish":
        system, n, url, products = args[0], int(args[1]), args[2], int(args[3])
        publish = {"waybill": publish_waybill, "celery_task": publish_celery_task}[system]
        emit(publish(n, url, products))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
