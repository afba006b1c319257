"""The broker side of the relay scenario: one durable quorum queue per system, counting
them, and a consumer (run as a subprocess) that timestamps arrivals and collects ids.

    python -m bench.relay_support.broker consume URL QUEUE OUT [--expected N] [--idle S] [--timeout S]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from urllib.parse import unquote, urlparse

import amqp

from .common import message_id_of

QUORUM = {"x-queue-type": "quorum"}
# system -> its queue. Waybill's relay publishes to its topic exchange (waybill.events,
# declared here as bus.EVENTS declares it); the bench queue binds orders' events.
QUEUES = {"waybill": "bench.waybill", "on_commit_delay": "bench.celery",
          "django_outbox_pattern": "bench.dop", "raw_kombu": "bench.kombu"}
CELERY_EXCHANGE = "bench.celery"


def connect(url: str, **kwargs) -> amqp.Connection:
    parts = urlparse(url)
    vhost = unquote(parts.path[1:]) or "/"
    connection = amqp.Connection(f"{parts.hostname}:{parts.port}", userid=unquote(parts.username),
                                 password=unquote(parts.password), virtual_host=vhost, **kwargs)
    connection.connect()
    return connection


def declare(url: str) -> None:
    """Exchanges as Waybill's bus declares them, and the four durable quorum queues."""
    with connect(url) as connection:
        channel = connection.channel()
        channel.exchange_declare("waybill.events", "topic", durable=True, auto_delete=False)
        channel.exchange_declare("waybill.commands", "direct", durable=True, auto_delete=False)
        channel.exchange_declare(CELERY_EXCHANGE, "direct", durable=True, auto_delete=False)
        for name in QUEUES.values():
            channel.queue_declare(name, durable=True, auto_delete=False, arguments=QUORUM)
        channel.queue_bind(QUEUES["waybill"], "waybill.events", routing_key="orders.#")
        channel.queue_bind(QUEUES["on_commit_delay"], CELERY_EXCHANGE, routing_key=CELERY_EXCHANGE)


def count(url: str, queue: str) -> int:
    with connect(url) as connection:
        return connection.channel().queue_declare(queue, passive=True).message_count


def purge(url: str, queue: str) -> None:
    with connect(url) as connection:
        channel = connection.channel()
        channel.queue_purge(queue)
    # A quorum queue's purge is applied through its Raft log: wait until it shows.
    deadline = time.monotonic() + 30
    while count(url, queue) and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_for_count(url: str, queue: str, at_least: int, *, timeout: float, poll: float = 0.05) -> int:
    deadline = time.monotonic() + timeout
    with connect(url) as connection:
        channel = connection.channel()
        while True:
            n = channel.queue_declare(queue, passive=True).message_count
            if n >= at_least or time.monotonic() > deadline:
                return n
            time.sleep(poll)


def consume(url: str, queue: str, out: str, *, expected: int = 0, idle: float = 2.0,
            timeout: float = 600.0) -> int:
    """Take every message off ``queue`` (no ack: the run is over for them), writing
    ``id arrival-epoch-seconds`` lines. Stops after ``expected`` messages and ``idle``
    quiet seconds, or ``timeout``, or SIGTERM."""
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    received = 0
    with open(out, "w", buffering=1 << 16) as f, connect(url) as connection:
        channel = connection.channel()

        def on_message(message: amqp.Message) -> None:
            nonlocal received
            now = time.time()
            f.write(f"{message_id_of(message.body)} {now:.6f}\n")
            received += 1

        channel.basic_consume(queue, no_ack=True, callback=on_message)
        began = last = time.monotonic()
        while not stop[0]:
            before = received
            try:
                connection.drain_events(timeout=0.2)
            except TimeoutError:
                pass
            except OSError as exc:  # socket.timeout is TimeoutError; others are real
                if "timed out" not in str(exc):
                    raise
            now = time.monotonic()
            if received != before:
                last = now
            if received >= expected and now - last > idle:
                break
            if now - began > timeout:
                break
    return received


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consume")
    c.add_argument("url")
    c.add_argument("queue")
    c.add_argument("out")
    c.add_argument("--expected", type=int, default=0)
    c.add_argument("--idle", type=float, default=2.0)
    c.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    n = consume(args.url, args.queue, args.out, expected=args.expected, idle=args.idle, timeout=args.timeout)
    print(f"consumed {n}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
