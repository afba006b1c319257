"""(c) A raw Kombu publish loop, the ceiling: no database, no framework, the same message,
publisher confirms, persistent, to a durable quorum queue (bench.kombu):

    python -m bench.relay_support.kombu_proc burst URL N PROGRESS
                                              one confirm per publish (Kombu's confirm_publish)
    python -m bench.relay_support.kombu_proc pipelined URL N WINDOW PROGRESS
                                              confirms awaited once per WINDOW publishes
    python -m bench.relay_support.kombu_proc rate URL RATE SECONDS OUT   publish-call latency at a fixed rate
"""

from __future__ import annotations

import json
import sys
import time

import amqp
from kombu import Connection, Producer

from .broker import QUEUES
from .common import Progress, emit, envelope, open_loop

QUEUE = QUEUES["raw_kombu"]


def _bodies(n: int) -> list[tuple[str, str]]:
    return [(env["id"], json.dumps(env)) for env in (envelope(i) for i in range(n))]


def _confirmed_producer(url: str) -> tuple[Connection, Producer]:
    connection = Connection(url, transport_options={"confirm_publish": True})
    connection.ensure_connection(max_retries=1)
    return connection, Producer(connection.default_channel)


def _publish(producer: Producer, ident: str, body: str) -> None:
    producer.publish(body, exchange="", routing_key=QUEUE, content_type="application/json",
                     content_encoding="utf-8", delivery_mode=2, message_id=ident, retry=False)


def burst(url: str, n: int, progress_path: str) -> dict:
    bodies = _bodies(n)
    progress = Progress(progress_path)
    connection, producer = _confirmed_producer(url)
    began = time.perf_counter()
    for i, (ident, body) in enumerate(bodies, 1):
        _publish(producer, ident, body)  # returns once the broker confirmed it
        progress.set(i)
    seconds = time.perf_counter() - began
    connection.release()
    return {"published": n, "seconds": seconds}


def pipelined(url: str, n: int, window: int, progress_path: str) -> dict:
    """Publish a window of messages, then wait for the broker's (cumulative) confirms."""
    bodies = _bodies(n)
    progress = Progress(progress_path)
    connection = Connection(url)
    connection.ensure_connection(max_retries=1)
    channel = connection.default_channel
    channel.confirm_select()
    acked = [0]
    nacked: list[int] = []

    def on_ack(delivery_tag: int, multiple: bool) -> None:
        acked[0] = max(acked[0], delivery_tag)

    channel.events["basic_ack"].add(on_ack)
    channel.events["basic_nack"].add(lambda tag, multiple: nacked.append(tag))
    began = time.perf_counter()
    published = 0
    for ident, body in bodies:
        channel.basic_publish(amqp.Message(body, content_type="application/json", content_encoding="utf-8",
                                           delivery_mode=2, message_id=ident), exchange="", routing_key=QUEUE)
        published += 1
        if published % window == 0 or published == n:
            while acked[0] < published:
                connection.drain_events(timeout=10)
            progress.set(acked[0])
    seconds = time.perf_counter() - began
    connection.release()
    if nacked:
        raise RuntimeError(f"{len(nacked)} publishes nacked")
    return {"published": n, "seconds": seconds, "window": window}


def rate(url: str, per_s: float, seconds: float, out: str) -> dict:
    total = int(per_s * seconds)
    bodies = _bodies(total)
    connection, producer = _confirmed_producer(url)

    def send(i: int) -> tuple[str, float]:
        started = time.time()
        _publish(producer, *bodies[i])
        return bodies[i][0], started

    result = open_loop(rate=per_s, seconds=seconds, workers=1, send=send, out=out)
    connection.release()
    return result


def main(argv: list[str]) -> None:
    command, url, *args = argv
    if command == "burst":
        emit(burst(url, int(args[0]), args[1]))
    elif command == "pipelined":
        emit(pipelined(url, int(args[0]), int(args[1]), args[2]))
    elif command == "rate":
        emit(rate(url, float(args[0]), float(args[1]), args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
