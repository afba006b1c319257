"""The translator (``waybill.translator``): a consumer whose code lags (``WAYBILL_LAGGING``) is
fed through it, and given every message of a listed type at the version it reads, through
the downcasters registered beside the contracts; everything else exactly as it came.
Here on the in-memory transport; ``tests/services/test_lagging_consumer.py`` runs it on
RabbitMQ beside the whole deployment."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.inventory.models import InboxMessage
from launcher.deployment import processes
from launcher.polling import wait_for
from waybill import bus, contexts
from waybill.consumer import ContextConsumer, Outcome
from waybill.messages import Envelope
from waybill.translator import TRANSLATED_FROM, Translator, translate
from waybill.wire import Received

PIN = "inventory:orders.order_cancelled@1"
PINS = {"orders.order_cancelled": 1}


def _cancelled(version: int = 2, currency: str = "EUR") -> Envelope:
    price = {"amount": "12.50", "currency": currency} if version == 2 else "12.50"
    payload = {"order_id": str(uuid.uuid4()), "customer_id": 7, "status": "CANCELLED",
               "lines": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": price}],
               "total": {"amount": "25.00", "currency": currency} if version == 2 else "25.00"}
    return Envelope(id=uuid.uuid4(), type="orders.order_cancelled", schema_version=version,
                    aggregate_id=payload["order_id"], aggregate_version=3, occurred_at=datetime.now(UTC),
                    correlation_id=uuid.uuid4(), payload=payload)


def test_a_newer_version_of_a_listed_type_is_given_at_the_version_the_consumer_reads():
    published = _cancelled(version=2)
    body, converted_from = translate(PINS, published.to_json().encode(), bus.JSON)
    given = json.loads(body)
    assert converted_from == 2
    assert given["schema_version"] == 1 and given["id"] == str(published.id)
    assert given["payload"]["total"] == "25.00" and given["payload"]["lines"][0]["unit_price"] == "12.50"
    assert {k: v for k, v in given.items() if k not in ("schema_version", "payload")} == \
        {k: v for k, v in json.loads(published.to_json()).items() if k not in ("schema_version", "payload")}


@pytest.mark.parametrize("body, content_type", [
    (_cancelled(version=1).to_json().encode(), bus.JSON),  # the version it reads already
    (_cancelled(version=2, currency="USD").to_json().encode(), bus.JSON),  # a step refuses it
    (b'{"type": "orders.order_cancelled", "schema_version": 2', bus.JSON),  # malformed
    (b"\x80\x04K\x01.", "application/x-python-serialize"),  # not JSON: never decoded here
], ids=["older", "refused-by-a-step", "malformed", "pickle"])
def test_anything_else_is_given_exactly_as_it_came(body, content_type):
    assert translate(PINS, body, content_type) == (body, None)
    other = _cancelled(version=2).model_copy(update={"type": "orders.order_placed"}).to_json().encode()
    assert translate(PINS, other, bus.JSON) == (other, None)  # a type not listed


def test_the_topology_feeds_a_lagging_consumer_through_its_translator_and_back(settings):
    inventory = contexts.get("inventory")
    direct = {(b.exchange.name, b.routing_key) for b in bus.context_queue(inventory).bindings}
    assert ("waybill.events", "orders.order_cancelled") in direct
    assert ("waybill.translated", "waybill.inventory") in direct
    settings.WAYBILL_LAGGING = (PIN,)
    assert [(b.exchange.name, b.routing_key) for b in bus.context_queue(inventory).bindings] == \
        [("waybill.translated", "waybill.inventory")]
    assert {(b.exchange.name, b.routing_key) for b in bus.translator_queue(inventory).bindings} == \
        direct - {("waybill.translated", "waybill.inventory")}


@pytest.mark.parametrize("entry, refusal", [
    ("webhooks:orders.order_placed@1", "chosen at run time"),
    ("inventory:orders.order_placed@1", "does not consume orders.order_placed"),
    ("inventory:orders.order_cancelled@9", "unsupported schema version 9"),
    ("inventory:orders.order_cancelled", "expected <consumer>:<type>@<version>"),
])
def test_a_lag_the_translator_cannot_serve_is_refused_before_anything_is_bound(settings, entry, refusal):
    settings.WAYBILL_LAGGING = (entry,)
    consumer = entry.split(":")[0]
    with pytest.raises(ImproperlyConfigured, match=refusal), bus.connect() as connection:
        bus.declare(connection)
    with pytest.raises(ImproperlyConfigured, match=refusal):
        Translator(contexts.get(consumer))


def _queued(channel, queue) -> int:
    return queue(channel).queue_declare(passive=True).message_count


def _publish(producer, envelope: Envelope) -> None:
    exchange, key = bus.route(envelope.type, envelope.schema_version, envelope.aggregate_id)
    producer.publish(envelope.to_json(), exchange=exchange, routing_key=key, content_type=bus.JSON,
                     message_id=str(envelope.id))


def _taken(channel, queue) -> list:
    taken = []
    while (message := queue(channel).get(no_ack=True)) is not None:
        taken.append(message)
    return taken


@pytest.mark.django_db(transaction=True, databases=["inventory", "webhooks"])  # webhooks: its bindings
def test_a_lagging_consumer_reads_every_message_at_its_version_in_order_and_nothing_is_lost(settings):
    inventory = contexts.get("inventory")
    stop = threading.Event()
    with bus.connect() as connection:
        channel = connection.default_channel
        bus.declare(connection)
        target, translator_queue = bus.context_queue(inventory), bus.translator_queue(inventory)
        target(channel).purge()
        producer = connection.Producer(channel)
        before = _cancelled(version=1)
        _publish(producer, before)  # directly, before the lag

        settings.WAYBILL_LAGGING = (PIN,)
        bus.declare(connection)
        published = [_cancelled(version=2), _cancelled(version=1)]
        for envelope in published:
            _publish(producer, envelope)
        # Only through the translator now: the consumer's own queue no longer binds the events.
        assert _queued(channel, target) == 1 and _queued(channel, translator_queue) == 2

        thread = threading.Thread(target=Translator(inventory).run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_for(lambda: _queued(channel, target) == 3 and _queued(channel, translator_queue) == 0, 10,
                     "the translator to move both messages")
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
        given = _taken(channel, target)
        # Behind what came directly, in the order published, each at the version it reads.
        assert [json.loads(m.body)["id"] for m in given] == [str(e.id) for e in (before, *published)]
        assert [json.loads(m.body)["schema_version"] for m in given] == [1, 1, 1]
        assert [m.headers.get(TRANSLATED_FROM) for m in given] == [None, 2, None]
        assert [m.properties["message_id"] for m in given] == [str(e.id) for e in (before, *published)]

        consumer = ContextConsumer(inventory)
        outcomes = [consumer.handle(Received.from_kombu(m)) for m in given]
        assert outcomes == [Outcome.APPLIED] * 3
        # The consumer kept what it was given: v1, as code that knows nothing newer would.
        assert {row.envelope["schema_version"] for row in InboxMessage.objects.using("inventory").all()} == {1}

        # No longer lagging: its own bindings back, and its translator's queue unbound.
        settings.WAYBILL_LAGGING = ()
        bus.declare(connection)
        again = _cancelled(version=2)
        _publish(producer, again)
        assert [json.loads(m.body)["id"] for m in _taken(channel, target)] == [str(again.id)]
        assert _queued(channel, translator_queue) == 0


@pytest.mark.django_db(databases=["webhooks"])  # webhooks: its bindings
def test_a_lag_is_not_ended_while_its_translator_queue_holds_messages(settings):
    """They would reach the consumer after later ones that come directly: refused, before
    anything changed, until the translator emptied its queue and stopped."""
    inventory = contexts.get("inventory")
    with bus.connect() as connection:
        channel = connection.default_channel
        settings.WAYBILL_LAGGING = (PIN,)
        bus.declare(connection)
        translator_queue = bus.translator_queue(inventory)
        _publish(connection.Producer(channel), _cancelled(version=2))
        settings.WAYBILL_LAGGING = ()
        with pytest.raises(bus.LagNotEnded, match="holds 1 messages"):
            bus.declare(connection)
        # Still lagging: what comes goes to the translator's queue, not to the consumer's.
        assert [(b.exchange, b.routing_key) for b in channel.state.queue_bindings("waybill.inventory")] == \
            [("waybill.translated", "waybill.inventory")]
        translator_queue(channel).purge()
        bus.declare(connection)
        assert ("waybill.events", "orders.order_cancelled") in \
            {(b.exchange, b.routing_key) for b in channel.state.queue_bindings("waybill.inventory")}


def test_the_launcher_runs_a_translator_for_each_context_whose_consumer_lags():
    assert not [p for p in processes() if p.kind == "translator"]
    translators = [p for p in processes(lagging=f"{PIN},payments:orders.order_cancelled@1") if p.kind == "translator"]
    assert [(p.name, p.context, p.command[-1]) for p in translators] == [
        ("inventory-translator", "inventory", "runtranslator"), ("orders-translator", "orders", "runtranslator")]
    assert all("WAYBILL_LAGGING" in p.variables for p in translators)
    with pytest.raises(ValueError, match="no context declares"):
        processes(lagging="warehouse:orders.order_cancelled@1")
