"""Generate and publish the rebuild scenario's event history, with the product's settings:

    python -m bench.rebuild_support.history publish N URL OUT    to waybill.events (history + queues)
    python -m bench.rebuild_support.history refill OUT URL QUEUE  the same bodies to QUEUE alone

Per order, as the shop's saga emits them: ``orders.order_placed`` (its snapshot),
``inventory.stock_reserved``, ``orders.payment_charged`` and ``orders.order_confirmed``
(its snapshot again); and every second reservation an ``inventory.product_updated``
document of one of the order's ``PRODUCTS`` products. Orders overlap as they do under load:
each step comes ``LAG`` orders after the one before it, so a batch mixes orders at every
step. Exactly N messages (the orders still in flight at the end are left there).

``publish`` sends them as Waybill's relay does (``bus.route``'s exchange and routing key,
persistent, message id, traceparent header), with confirms awaited once per window, and
writes the bodies to OUT. ``refill`` publishes OUT's bodies to the default exchange with
QUEUE as routing key: into readmodels' queue and not into the history stream, which so
keeps the N messages a rebuild reads.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

WINDOW = 500
PRODUCTS = 100
CUSTOMERS = 500
LAG = 25  # orders between one step of an order and its next
SKU = "BENCH-{:03d}"
EVENTS_PER_ORDER = 4.5  # four events, and a product document every second order


def _setup():
    import django

    django.setup()


def _price(product: int) -> Decimal:
    return Decimal(5 + product % 20) + Decimal("0.90")


def messages(n: int):
    """``n`` envelopes of the history, in the order they were published."""
    from apps.inventory.contracts import ProductUpdated, StockLine, StockReserved
    from apps.orders.contracts import Money, OrderConfirmed, OrderLine, OrderPlaced, PaymentCharged
    from waybill.messages import Envelope

    orders = int(n / EVENTS_PER_ORDER) + 3 * LAG + 1
    began = datetime.now(UTC) - timedelta(days=1)
    ids = [uuid.uuid4() for _ in range(orders)]
    last: dict[uuid.UUID, uuid.UUID] = {}  # order -> its last message (the next one's cause)
    product_versions = [1] * PRODUCTS
    reserved = [0] * PRODUCTS
    count = 0

    def lines_of(i: int) -> list[tuple[int, int]]:
        first, second = i % PRODUCTS, (i * 7 + 1) % PRODUCTS
        return [(first, 1), (second if second != first else (first + 1) % PRODUCTS, 2)]

    def snapshot(event, i: int, status: str) -> object:
        lines = [OrderLine(sku=SKU.format(p), name=f"Bench product {p}", quantity=q,
                           unit_price=Money(amount=_price(p), currency="EUR")) for p, q in lines_of(i)]
        total = sum((_price(p) * q for p, q in lines_of(i)), Decimal(0))
        return event(order_id=ids[i], customer_id=1 + i % CUSTOMERS, status=status, lines=lines,
                     total=Money(amount=total, currency="EUR"))

    def envelope(message, aggregate_id: str, version: int, order: uuid.UUID) -> Envelope:
        nonlocal count
        built = Envelope(id=uuid.uuid4(), type=message.message_type, schema_version=message.schema_version,
                         aggregate_id=aggregate_id, aggregate_version=version,
                         occurred_at=began + timedelta(milliseconds=10 * count), correlation_id=order,
                         causation_id=last.get(order), payload=message.model_dump(mode="json"))
        last[order] = built.id
        count += 1
        return built

    for t in range(orders + 3 * LAG):
        steps = []
        if t < orders:
            steps.append((0, t))
        for step in (1, 2, 3):
            if 0 <= t - step * LAG < orders:
                steps.append((step, t - step * LAG))
        for step, i in steps:
            order = ids[i]
            if step == 0:
                out = [envelope(snapshot(OrderPlaced, i, "PENDING"), str(order), 1, order)]
            elif step == 1:
                out = [envelope(StockReserved(order_id=order, lines=[StockLine(sku=SKU.format(p), quantity=q)
                                                                     for p, q in lines_of(i)]), str(order), 1, order)]
                for p, q in lines_of(i):
                    reserved[p] += q
                # Every second order, its first line's product: even orders, then odd ones
                # in the next hundred, so every product's document comes now and then.
                if i % 2 == (i // PRODUCTS) % 2:
                    p = lines_of(i)[0][0]
                    product_versions[p] += 1
                    out.append(envelope(ProductUpdated(sku=SKU.format(p), name=f"Bench product {p}", price=_price(p),
                                                       on_hand=1_000_000, reserved=reserved[p],
                                                       available=1_000_000 - reserved[p]),
                                        SKU.format(p), product_versions[p], order))
            elif step == 2:
                total = sum((_price(p) * q for p, q in lines_of(i)), Decimal(0))
                out = [envelope(PaymentCharged(order_id=order, charge_id=f"ch_bench_{i}", amount=total),
                                str(order), 1, order)]
            else:
                out = [envelope(snapshot(OrderConfirmed, i, "CONFIRMED"), str(order), 2, order)]
            for built in out:
                yield built
                if count >= n:
                    return


def publish(n: int, url: str, out: str) -> dict:
    """As Waybill's relay publishes a row (bus.route, the same properties)."""
    _setup()
    from kombu import Connection, Producer

    from bench.consume_support.backlog import _Confirms
    from waybill import bus

    connection = Connection(url)
    connection.ensure_connection(max_retries=3)
    channel = connection.default_channel
    confirms = _Confirms(connection.connection, channel)
    producer = Producer(channel)
    types: Counter = Counter()
    orders: set[str] = set()
    confirmed = 0
    products: dict[str, int] = {}  # sku -> its newest document's version
    began = time.perf_counter()
    published = 0
    with open(out, "w") as bodies:
        for envelope in messages(n):
            body = envelope.to_json()
            exchange, routing_key = bus.route(envelope.type, envelope.schema_version, envelope.aggregate_id)
            producer.publish(body, exchange=exchange.name, routing_key=routing_key, content_type=bus.JSON,
                             content_encoding="utf-8", delivery_mode=2, message_id=str(envelope.id),
                             headers={"traceparent": ""}, retry=False)
            bodies.write(f"{envelope.id} {body}\n")
            published += 1
            types[envelope.type] += 1
            if envelope.type == "inventory.product_updated":
                sku = envelope.aggregate_id
                products[sku] = max(envelope.aggregate_version, products.get(sku, 0))
            else:
                orders.add(envelope.aggregate_id)
                confirmed += envelope.type == "orders.order_confirmed"
            if published % WINDOW == 0:
                confirms.wait(published)
        confirms.wait(published)
    seconds = time.perf_counter() - began
    connection.release()
    order_messages = published - types["inventory.product_updated"]
    return {"published": published, "seconds": seconds, "types": dict(types), "orders": len(orders),
            "confirmed": confirmed, "products": len(products),
            # What the read models hold once all is applied, as bench/rebuild.py's CHECKSUM
            # reads them: an order's version counts the messages applied to it.
            "checksum": [len(orders), order_messages, confirmed, len(products), sum(products.values())]}


def refill(path: str, url: str, queue: str) -> dict:
    """The bodies ``publish`` wrote, to ``queue`` alone (the default exchange)."""
    _setup()
    from kombu import Connection, Producer

    from bench.consume_support.backlog import _Confirms
    from waybill import bus

    connection = Connection(url)
    connection.ensure_connection(max_retries=3)
    channel = connection.default_channel
    confirms = _Confirms(connection.connection, channel)
    producer = Producer(channel)
    began = time.perf_counter()
    published = 0
    with open(path) as bodies:
        for line in bodies:
            message_id, body = line.rstrip("\n").split(" ", 1)
            producer.publish(body, exchange="", routing_key=queue, content_type=bus.JSON, content_encoding="utf-8",
                             delivery_mode=2, message_id=message_id, headers={"traceparent": ""}, retry=False)
            published += 1
            if published % WINDOW == 0:
                confirms.wait(published)
        confirms.wait(published)
    seconds = time.perf_counter() - began
    connection.release()
    return {"published": published, "seconds": seconds}


def main(argv: list[str]) -> None:
    from bench.relay_support.common import emit

    command, *args = argv
    if command == "publish":
        emit(publish(int(args[0]), args[1], args[2]))
    elif command == "refill":
        emit(refill(args[0], args[1], args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
