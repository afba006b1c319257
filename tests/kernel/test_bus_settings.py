"""The bus speaks JSON only and acknowledges late, in Kombu and in Celery alike."""

import socket
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from kombu import Connection
from kombu.exceptions import OperationalError

from config.celery import app
from waybill import bus


def test_celery_accepts_and_sends_json_only():
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"


def test_celery_acks_after_the_work_and_requeues_on_a_lost_worker():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_each_context_has_its_own_task_queue_and_exchange():
    queues = {q.name: q.exchange.name for q in app.conf.task_queues}
    assert queues == {f"waybill.tasks.{c}": f"waybill.tasks.{c}" for c in settings.WAYBILL_CONTEXTS}


def test_the_relay_publishes_with_confirms():
    assert settings.WAYBILL_BROKER_TRANSPORT_OPTIONS["confirm_publish"] is True
    assert app.conf.broker_transport_options["confirm_publish"] is True


def test_a_connection_to_a_cluster_tries_every_node_once_before_it_gives_up():
    # Three loopback ports nobody listens on: each node refuses, as a cluster's dead nodes do.
    ports = []
    for _ in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    connection = Connection(";".join(f"amqp://guest:guest@127.0.0.1:{port}//" for port in ports))
    tried = []
    with pytest.raises(OperationalError):
        connection.ensure_connection(max_retries=bus.retries_for_every_node(connection), interval_start=0,
                                     errback=lambda exc, interval: tried.append(connection.as_uri()))
    tried.append(connection.as_uri())  # the last refusal raises instead of calling back
    assert [urlsplit(uri).port for uri in tried] == ports
    assert bus.retries_for_every_node(Connection("amqp://guest:guest@127.0.0.1:5672//")) == 1  # as before
