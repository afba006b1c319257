"""Every queue of the topology is a quorum queue, replicated on a cluster's nodes: the
broker's dead-letter queue and the contexts' Celery task queues too, which deployments
before the cluster declared classic (a classic queue lives on one node, and while that node
is down a worker's Celery cannot declare its queue and exits). The topology step replaces a
classic one, its messages moved over (dead letters are kept), and finishes a move that a
crash interrupted."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urlsplit

import httpx
import pytest
from kombu import Connection, Exchange, Queue

from waybill import bus

pytestmark = pytest.mark.xdist_group("services")


def _type(rabbitmq, name: str) -> str:
    url = urlsplit(rabbitmq.management_url)
    response = httpx.get(f"http://{url.hostname}:{url.port}/api/queues/waybill/{quote(name, safe='')}",
                         auth=(url.username, url.password), timeout=10)
    response.raise_for_status()
    return response.json()["type"]


def _classic(connection: Connection, name: str, messages: int = 0) -> Queue:
    """A classic queue ``name`` holding ``messages`` (each confirmed by the broker); returns
    the quorum queue of the same name that the topology declares now."""
    exchange = Exchange(name, type="direct", durable=True)
    Queue(name, exchange, routing_key=name, durable=True)(connection.default_channel).declare()
    producer = connection.Producer()
    for number in range(messages):
        producer.publish({"probe": number}, exchange=exchange, routing_key=name, serializer="json",
                         headers={"x-probe": str(number)})
    return Queue(name, exchange, routing_key=name, durable=True, queue_arguments={"x-queue-type": "quorum"})


def _bodies(connection: Connection, name: str) -> list[tuple]:
    with connection.channel() as channel:
        found = []
        while (message := channel.basic_get(name, no_ack=True)) is not None:
            found.append((message.body, message.headers["x-probe"]))
        return found


def test_the_topology_declares_the_dead_letter_and_task_queues_replicated(settings, broker_urls, rabbitmq):
    settings.WAYBILL_BROKER_URL = broker_urls["admin"]
    with Connection(broker_urls["admin"]) as connection:
        bus.declare(connection)
    assert _type(rabbitmq, bus.DEAD_QUEUE.name) == "quorum"
    assert {_type(rabbitmq, queue.name) for queue in settings.CELERY_TASK_QUEUES} == {"quorum"}


def test_a_classic_queue_is_declared_again_replicated_with_every_message_it_held(broker_urls, rabbitmq):
    empty, holding = (f"waybill.test.{uuid.uuid4().hex[:8]}" for _ in range(2))
    # Publisher confirms: the messages are in the queue before the topology looks at it.
    with Connection(broker_urls["admin"], transport_options={"confirm_publish": True}) as connection:
        try:
            bus._declare_replicated(connection, _classic(connection, empty))
            bus._declare_replicated(connection, _classic(connection, holding, messages=2))
            assert _type(rabbitmq, empty) == "quorum" and _type(rabbitmq, holding) == "quorum"
            assert sorted(_bodies(connection, holding)) == [('{"probe": 0}', "0"), ('{"probe": 1}', "1")]
        finally:
            for name in (empty, holding, f"{holding}.moving"):
                with connection.channel() as channel:
                    channel.queue_delete(name)


def test_a_move_a_crash_interrupted_is_finished_by_the_next_declare(broker_urls, rabbitmq):
    name = f"waybill.test.{uuid.uuid4().hex[:8]}"
    with Connection(broker_urls["admin"], transport_options={"confirm_publish": True}) as connection:
        try:
            # What a crash after the classic queue was replaced leaves: the messages in .moving.
            stranded = _classic(connection, f"{name}.moving", messages=2)
            queue = Queue(name, durable=True, queue_arguments={"x-queue-type": "quorum"})
            bus._declare_replicated(connection, queue)
            assert sorted(_bodies(connection, name)) == [('{"probe": 0}', "0"), ('{"probe": 1}', "1")]
            with connection.channel() as channel, pytest.raises(Exception, match="NOT_FOUND"):
                channel.queue_declare(stranded.name, passive=True)
        finally:
            for leftover in (name, f"{name}.moving"):
                with connection.channel() as channel:
                    channel.queue_delete(leftover)
