"""Each context's credentials reach its own data and queues, and nothing else."""

from __future__ import annotations

import psycopg
import pytest
import redis as redis_py
from amqp.exceptions import AccessRefused
from kombu import Connection, Queue
from psycopg.conninfo import make_conninfo

from waybill.bus import EVENTS, QUEUE_ARGUMENTS

pytestmark = pytest.mark.xdist_group("services")


def _quorum_queue(name: str) -> Queue:
    # The same arguments as the real topology: the deployment may have declared it already.
    return Queue(name, EVENTS, routing_key="#", durable=True, queue_arguments=QUEUE_ARGUMENTS)


def test_postgres_role_reaches_only_its_own_database(pg_urls):
    with psycopg.connect(pg_urls["inventory"]) as conn:
        conn.execute("CREATE TABLE isolation_probe_stock (sku text PRIMARY KEY, on_hand int)")
        conn.execute("INSERT INTO isolation_probe_stock VALUES ('KETTLE-1', 5)")

    with psycopg.connect(pg_urls["orders"]) as conn:  # its own database: full use
        conn.execute("CREATE TABLE isolation_probe_orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO isolation_probe_orders VALUES (1)")
        assert conn.execute("SELECT count(*) FROM isolation_probe_orders").fetchone() == (1,)

    # The orders role cannot even connect to another context's database (nor to the
    # maintenance database), so it cannot read the stock table there.
    for other_db in ("waybill_inventory", "waybill_default", "postgres"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(make_conninfo(pg_urls["orders"], dbname=other_db))


def test_rabbitmq_user_consumes_only_its_own_queue(broker_urls):
    with Connection(broker_urls["admin"]) as admin:  # the topology is the admin's job
        for name in ("waybill.orders", "waybill.inventory"):
            _quorum_queue(name)(admin.default_channel).declare()

    # Publisher confirms: a refused publish would raise here instead of vanishing.
    with Connection(broker_urls["orders"], transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(exchange=EVENTS, auto_declare=False)  # configure is not ours
        producer.publish({"type": "orders.placed"}, routing_key="orders.placed")

        received = []

        def on_message(body, message):
            received.append(body)
            message.ack()

        # no_declare: consuming needs only the read permission on the queue.
        with conn.Consumer([Queue("waybill.orders", no_declare=True)], callbacks=[on_message],
                           accept=["json"]):
            conn.drain_events(timeout=10)
        assert received == [{"type": "orders.placed"}]

        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            with conn.Consumer([Queue("waybill.inventory", no_declare=True)],
                               channel=conn.channel(), callbacks=[on_message]):
                conn.drain_events(timeout=1)


def test_redis_answers_ping(redis):
    client = redis_py.Redis.from_url(redis.url)
    try:
        assert client.ping() is True
    finally:
        client.close()
