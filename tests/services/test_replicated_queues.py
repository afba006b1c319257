"""Every queue of the topology is a quorum queue, replicated on a cluster's nodes: the
broker's dead-letter queue and the contexts' Celery task queues too, which deployments
before the cluster declared classic (a classic queue lives on one node, and while that node
is down a worker's Celery cannot declare its queue and exits). The topology step replaces
an empty classic one; one with messages in it is kept, never emptied."""

from __future__ import annotations

import logging
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
    exchange = Exchange(name, type="direct", durable=True)
    Queue(name, exchange, routing_key=name, durable=True)(connection.default_channel).declare()
    producer = connection.Producer()
    for _ in range(messages):
        producer.publish({"probe": True}, exchange=exchange, routing_key=name, serializer="json")
    return Queue(name, exchange, routing_key=name, durable=True, queue_arguments={"x-queue-type": "quorum"})


def test_the_topology_declares_the_dead_letter_and_task_queues_replicated(settings, broker_urls, rabbitmq):
    settings.WAYBILL_BROKER_URL = broker_urls["admin"]
    with Connection(broker_urls["admin"]) as connection:
        bus.declare(connection)
    assert _type(rabbitmq, bus.DEAD_QUEUE.name) == "quorum"
    assert {_type(rabbitmq, queue.name) for queue in settings.CELERY_TASK_QUEUES} == {"quorum"}


def test_an_empty_classic_queue_is_declared_again_replicated_and_one_with_messages_is_kept(broker_urls, rabbitmq,
                                                                                          caplog):
    empty, holding = (f"waybill.test.{uuid.uuid4().hex[:8]}" for _ in range(2))
    with Connection(broker_urls["admin"]) as connection:
        bus._declare_replicated(connection, _classic(connection, empty))
        with caplog.at_level(logging.WARNING, logger="waybill.bus"):
            bus._declare_replicated(connection, _classic(connection, holding, messages=2))
        try:
            assert _type(rabbitmq, empty) == "quorum"
            assert _type(rabbitmq, holding) == "classic"
            assert connection.default_channel.queue_declare(holding, passive=True).message_count == 2
            assert f"{holding} is a classic queue with messages in it" in caplog.text
        finally:
            for name in (empty, holding):
                connection.default_channel.queue_delete(name)
