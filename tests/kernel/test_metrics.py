"""The kernel's metrics (waybill.metrics), as a scraper reads them: the consumer counts each
message's outcome and times its handler, the relay counts what it published, the outbox
figures are read at the scrape and a database that does not answer leaves only its own
figures out; and WAYBILL_METRICS_ADDR serves them on an address of its own."""

from __future__ import annotations

import dataclasses
import json
import logging
from decimal import Decimal

import httpx
import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from apps.inventory import services as inventory
from launcher.polling import wait_for
from launcher.servers import free_port
from tests.poison import order_placed
from tests.support.scrape import Scrape
from waybill import contexts, metrics
from waybill.consumer import Outcome

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

LISTED = "inventory.product_listed"


def scrape() -> Scrape:
    return Scrape(metrics.exposition()[0].decode())


def test_each_outcome_is_counted_with_its_consumer_and_type_and_each_applied_message_timed(pump):
    before = scrape()
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    assert pump.relay("inventory") >= 1
    assert Outcome.APPLIED in pump.deliver("orders")
    body = json.dumps(order_placed())
    pump.publish(body)
    pump.publish(body)  # delivered twice: the inbox drops the second
    pump.publish_raw("readmodels", "{not json")
    outcomes = pump.deliver("readmodels")
    assert outcomes.count(Outcome.DUPLICATE) == 1 and outcomes.count(Outcome.DEAD_LETTERED) == 1
    after = scrape()

    def counted(**labels) -> float:
        return after.total("waybill_messages_consumed_total", **labels) - \
            before.total("waybill_messages_consumed_total", **labels)

    assert counted(consumer="orders", type=LISTED, outcome="applied") >= 1
    assert counted(consumer="readmodels", type="orders.order_placed", outcome="applied") == 1
    assert counted(consumer="readmodels", type="orders.order_placed", outcome="duplicate") == 1
    # What could not be read is counted under no type its sender made up.
    assert counted(consumer="readmodels", type=metrics.UNREAD_TYPE, outcome="dead-lettered") == 1
    for consumer, message_type in (("orders", LISTED), ("readmodels", "orders.order_placed")):
        timed = after.total("waybill_handler_seconds_count", consumer=consumer, type=message_type) - \
            before.total("waybill_handler_seconds_count", consumer=consumer, type=message_type)
        assert timed == counted(consumer=consumer, type=message_type, outcome="applied")
    assert after.total("waybill_messages_published_total", context="inventory") > \
        before.total("waybill_messages_published_total", context="inventory")


def test_the_outbox_and_its_dead_letters_are_read_at_the_scrape(pump):
    pump.relay()  # this process relays every context's outbox, as the runtime would
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    waiting = scrape()
    assert waiting.value("waybill_outbox_backlog", context="inventory") >= 1
    assert waiting.value("waybill_outbox_oldest_unsent_age_seconds", context="inventory") >= 0
    pump.publish_raw("readmodels", "{not json")
    pump.settle()
    settled = scrape()
    assert settled.value("waybill_outbox_backlog", context="inventory") == 0
    assert settled.value("waybill_outbox_oldest_unsent_age_seconds", context="inventory") == 0
    assert settled.value("waybill_outbox_parked", context="inventory") == 0
    assert settled.value("waybill_dead_letters", context="readmodels", consumer="readmodels") == 1
    # A bulkhead's dead letters are its own, in its context's database.
    assert settled.value("waybill_dead_letters", context="orders", consumer="payments") == 0


def test_a_database_that_does_not_answer_leaves_only_its_own_figures_out(pump, monkeypatch, caplog):
    pump.relay()
    # A relayed outbox in a database this process cannot reach (no connection for it).
    unreachable = dataclasses.replace(contexts.get("webhooks"), name="warehouse", database="warehouse")
    monkeypatch.setitem(metrics._relayed, "warehouse", unreachable)
    with caplog.at_level(logging.WARNING, logger="waybill.metrics"):
        figures = scrape()
    assert figures.value("waybill_outbox_backlog", context="inventory") == 0
    assert figures.samples("waybill_outbox_backlog", context="warehouse") == []
    assert "the outbox of warehouse could not be measured" in caplog.text


def test_waybill_metrics_addr_serves_the_figures_on_an_address_of_its_own(pump, settings, monkeypatch):
    settings.WAYBILL_METRICS_ADDR = f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(metrics, "_served", None)  # as in a process that has not served yet
    served = metrics.serve_configured()
    try:
        assert metrics.serve_configured() is served  # once per process
        assert served.address == metrics.parse_address(settings.WAYBILL_METRICS_ADDR)
        pump.relay()
        inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
        url = f"http://{settings.WAYBILL_METRICS_ADDR}/metrics"
        response = wait_for(lambda: httpx.get(url, timeout=5), timeout=10, what="the metrics server",
                            ignore=(httpx.TransportError,))
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4  # what it answers to no Accept
        assert Scrape(response.text).value("waybill_outbox_backlog", context="inventory") >= 1
    finally:
        served.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=2)


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:9100", ("::1", 9100)), ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_an_address_is_host_and_port(address, expected):
    assert metrics.parse_address(address) == expected


@pytest.mark.parametrize("address", ["9100", "localhost", ":9100", "host:port"])
def test_an_address_without_host_and_port_is_refused(address):
    with pytest.raises(ValueError, match="host:port"):
        metrics.parse_address(address)
