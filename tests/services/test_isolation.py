"""Each context's credentials reach its own data and queues, and nothing else."""

from __future__ import annotations

import psycopg
import pytest
import redis as redis_py
from amqp.exceptions import AccessRefused
from kombu import Connection, Queue
from psycopg.conninfo import make_conninfo

from waybill import bus
from waybill.bus import EVENTS, QUEUE_ARGUMENTS

pytestmark = pytest.mark.xdist_group("services")


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
    """Checked on the live topology without taking anybody's messages: a consume is
    authorised when it starts, so it is cancelled at once (anything it was handed unacked
    goes back to the queue)."""
    with Connection(broker_urls["admin"]) as admin:  # the topology is the admin's job
        bus.declare(admin)

    # Publisher confirms: a refused publish would raise here instead of vanishing.
    with Connection(broker_urls["orders"], transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(exchange=EVENTS, auto_declare=False)  # configure is not ours
        producer.publish({"probe": True}, routing_key="isolation.probe")  # bound by nobody: dropped

        own = conn.channel()
        own.basic_qos(0, 1, False)
        tag = own.basic_consume("waybill.orders", callback=lambda message: None)
        own.basic_cancel(tag)
        own.close()

        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            conn.channel().basic_consume("waybill.inventory", callback=lambda message: None)

    with Connection(broker_urls["orders"]) as conn, pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
        # Declaring (configure) another context's queue is refused too.
        Queue("waybill.inventory", durable=True, queue_arguments=QUEUE_ARGUMENTS)(conn.default_channel).declare()


def test_redis_answers_ping(redis):
    client = redis_py.Redis.from_url(redis.url)
    try:
        assert client.ping() is True
    finally:
        client.close()
