"""Invariant 8 on the real broker (issue 10): whatever is published as
``orders.order_placed``, every consumer bound to it keeps it as a dead letter with its exact
bytes, no process of the deployment dies, and the next order is confirmed."""

from __future__ import annotations

import json
import uuid

import pytest
from kombu import Connection
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from apps.orders.contracts import OrderPlaced
from launcher.polling import wait_for
from tests.poison import POISONS, Poison, order_placed, publish
from waybill import bus, contexts
from waybill.wire import wire_bytes

from .support import FLOW_TIMEOUT, place, product, query, wait_confirmed, webhook_endpoint

pytestmark = pytest.mark.xdist_group("services")


def _bound_dead_letter_tables() -> dict[str, tuple[str, str]]:
    """Consumer -> (database alias, dead-letter table), for each consumer of order_placed."""
    return {
        context.name: (context.database, context.dead_letters._meta.db_table)
        for context in contexts.all_contexts()
        if OrderPlaced.message_type in context.consumed_types
    }


def _broker(deployment) -> Connection:
    # Each publish waits for the broker's confirm: the connection's close must not race
    # the last messages.
    return Connection(deployment.stack.broker_urls["admin"], transport_options={"confirm_publish": True})


@pytest.fixture
def webhooks_want_order_placed(deployment, tokens):
    """Webhooks' queue binds order_placed only while some endpoint wants it (issue 12)."""
    with webhook_endpoint(deployment, tokens, OrderPlaced.message_type) as endpoint:
        yield endpoint


def test_every_poison_message_is_dead_lettered_exactly_and_every_process_stays_up(deployment, tokens,
                                                                                webhooks_want_order_placed):
    bound = _bound_dead_letter_tables()
    assert {"readmodels", "webhooks"} <= set(bound)
    pids = deployment.pids()
    run = uuid.uuid4().hex  # tells this run's dead letters from any other test's
    with _broker(deployment) as broker:
        for poison in POISONS:
            publish(broker.default_channel, poison, headers={"x-run": run})
    expected = {poison.name: poison for poison in POISONS}

    def dead_letters(database: str, table: str) -> dict[str, tuple[bytes, str, str]]:
        rows = query(deployment.stack.database_urls[database],
                     f"SELECT headers->>'x-poison', body, reason, content_type FROM {table} "  # noqa: S608 - our names
                     "WHERE headers->>'x-run' = %s", (run,))
        return {name: (bytes(body), reason, content_type) for name, body, reason, content_type in rows}

    for consumer, (database, table) in bound.items():
        stored = wait_for(lambda: (letters := dead_letters(database, table)).keys() == expected.keys() and letters,
                          FLOW_TIMEOUT, f"{consumer} to dead-letter all {len(expected)} poison messages",
                          describe=lambda: f"{sorted(dead_letters(database, table))}\n{deployment.log_tail(lines=10)}")
        for name, (body, reason, content_type) in stored.items():
            poison = expected[name]
            assert body == poison.body, f"{consumer}: {name} not kept byte for byte"
            assert poison.reason in reason, f"{consumer}: {name}: {reason}"
            assert content_type == (poison.content_type or "")

    # The supervisor would restart a process that died: the same pid is what says none did.
    assert deployment.pids() == pids, (
        f"a process did not survive the poison messages:\n{deployment.log_tail(lines=20)}")

    sku = product(deployment, tokens, on_hand=10)
    wait_confirmed(deployment, place(deployment, tokens, sku, 1))


def test_a_message_no_dead_letter_table_takes_goes_to_the_brokers_dead_letter_queue(deployment,
                                                                                   webhooks_want_order_placed):
    """The last resort: readmodels' dead-letter table refuses every row (its role lost the
    right to insert), so the worker rejects the message to ``waybill.dead`` instead of
    losing it or dying, and the webhooks consumer, another context with a table of its own, is unaffected."""
    url = deployment.stack.database_urls["readmodels"]
    pid = deployment.running["readmodels-worker"].pid
    run, poison = uuid.uuid4().hex, POISONS[0]
    with _broker(deployment) as broker:
        dead = bus.DEAD_QUEUE(broker.default_channel)
        dead.declare()
        query(url, "REVOKE INSERT ON readmodels_deadletter FROM CURRENT_USER")
        try:
            publish(broker.default_channel, poison, headers={"x-run": run})

            def rejected():
                while (message := dead.get(no_ack=True)) is not None:
                    if message.headers.get("x-run") == run:
                        return message
                return None

            message = wait_for(rejected, FLOW_TIMEOUT, "the message in waybill.dead",
                               describe=lambda: deployment.log_tail("readmodels-worker", lines=10))
        finally:
            query(url, "GRANT INSERT ON readmodels_deadletter TO CURRENT_USER")
    assert wire_bytes(message.body, message.content_encoding) == poison.body
    # RabbitMQ's record of why it is there: rejected from readmodels' queue.
    assert any(death.get("queue") == "waybill.readmodels" for death in message.headers.get("x-death") or [])
    webhooks = deployment.stack.database_urls["webhooks"]
    wait_for(lambda: query(webhooks, "SELECT 1 FROM webhooks_deadletter WHERE headers->>'x-run' = %s", (run,)),
             FLOW_TIMEOUT, "the webhooks consumer to dead-letter it as usual")
    assert deployment.running["readmodels-worker"].pid == pid  # not died and restarted


def test_while_its_database_is_down_a_worker_holds_the_message_and_applies_it_once_it_is_back(deployment,
                                                                                             postgres):
    """A lost database is not the message's failure: the worker neither acks, nor retries
    it from the inbox, nor dead-letters it, nor dies; it waits with backoff and applies it.

    The outage is readmodels' alone (its role's connections cut, new ones refused), so the
    other contexts' processes, which later tests use, keep their connections."""
    url = deployment.stack.database_urls["readmodels"]
    role = conninfo_to_dict(url)["user"]
    pid = deployment.running["readmodels-worker"].pid
    event, log = order_placed(), deployment.logs / "readmodels-worker.log"
    seen = log.stat().st_size
    query(postgres.superuser_url, sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        query(postgres.superuser_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
              (role,))
        with _broker(deployment) as broker:
            publish(broker.default_channel, Poison("good", json.dumps(event).encode(), ""))
        wait_for(lambda: b"database readmodels failed; retrying" in log.read_bytes()[seen:],
                 FLOW_TIMEOUT, "the readmodels worker to wait for its database")
    finally:
        query(postgres.superuser_url, sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
    wait_for(lambda: query(url, "SELECT 1 FROM readmodels_ordersummary WHERE order_id = %s",
                           (event["aggregate_id"],)), FLOW_TIMEOUT, "the order on the read side")
    assert query(url, "SELECT status, attempts FROM readmodels_inboxmessage WHERE message_id = %s",
                 (event["id"],)) == [("processed", 1)]
    assert query(url, "SELECT count(*) FROM readmodels_deadletter WHERE message_id = %s", (event["id"],)) == [(0,)]
    assert deployment.running["readmodels-worker"].pid == pid  # not died and restarted
