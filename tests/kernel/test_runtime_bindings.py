"""Bindings chosen at run time (``manifest.Consumer.bindings``; issue 12): the kernel binds
exactly what a consumer's function asks for, binds before it unbinds, asks in the
consumer's own process when woken or on its poll, and never lets one context's failing
function keep the topology step from declaring the rest."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from kombu import Connection

from waybill import bus, contexts
from waybill.consumer import ContextConsumer
from waybill.scheduler import jobs_for


class RecordingChannel:
    def __init__(self):
        self.calls = []

    def queue_bind(self, *, queue, exchange, routing_key):
        self.calls.append(("bind", queue, routing_key))

    def queue_unbind(self, *, queue, exchange, routing_key):
        self.calls.append(("unbind", queue, routing_key))


def _with_bindings(function, name: str = "webhooks") -> contexts.BoundedContext:
    return dataclasses.replace(contexts.get(name), bindings=function)


def test_a_queue_with_bindings_chosen_at_run_time_declares_only_its_command_binding():
    webhooks = bus.context_queue(contexts.get("webhooks"))
    assert [(b.exchange.name, b.routing_key) for b in webhooks.bindings] == [("waybill.commands", "webhooks")]
    readmodels = bus.context_queue(contexts.get("readmodels"))
    assert {b.routing_key for b in readmodels.bindings} >= {"orders.order_placed", "readmodels"}


def test_bind_exactly_binds_every_partition_first_then_unbinds_the_other_handled_types(settings):
    settings.WAYBILL_PARTITIONS = 2
    context = contexts.get("webhooks")
    channel = RecordingChannel()
    bus.bind_exactly(channel, context, ["orders.order_placed"])
    binds = [call for call in channel.calls if call[0] == "bind"]
    assert binds == [("bind", "waybill.webhooks.p0", "orders.order_placed.p0"),
                     ("bind", "waybill.webhooks.p1", "orders.order_placed.p1")]
    assert channel.calls[:2] == binds
    unbound = {call[2] for call in channel.calls[2:]}
    assert all(call[0] == "unbind" for call in channel.calls[2:])
    assert unbound == {f"{t}.p{i}" for t in context.consumed_types - {"orders.order_placed"} for i in (0, 1)}


def test_bind_exactly_refuses_a_type_the_consumer_cannot_handle():
    with pytest.raises(ValueError, match="no handler"):
        bus.bind_exactly(RecordingChannel(), contexts.get("webhooks"), ["orders.reserve_nothing"])


def test_the_bindings_job_runs_only_for_a_consumer_that_has_them():
    assert "webhooks bindings" in {job.name for job in jobs_for(ContextConsumer(contexts.get("webhooks")),
                                                                  relay_backstop=True)}
    assert not any("bindings" in job.name
                   for name in ("orders", "payments", "inventory", "readmodels")
                   for job in jobs_for(ContextConsumer(contexts.get(name)), relay_backstop=True))


def test_rebind_asks_on_its_poll_or_when_woken_and_binds_afresh_on_a_new_connection(settings):
    settings.WAYBILL_BINDINGS_SECONDS = 3600.0
    settings.WAYBILL_BINDINGS_RESYNC_SECONDS = 3600.0
    asked = []

    def bindings(*, bind, resync):
        asked.append(resync)
        bind(["orders.order_placed"])
        return True

    with bus.connect() as connection:
        bus.EVENTS(connection.default_channel).declare()
    consumer = ContextConsumer(_with_bindings(bindings))
    try:
        assert consumer.rebind() and asked == [True]  # a new connection: everything afresh
        assert not consumer.rebind() and asked == [True]  # not due, not woken
        bus.bindings_changed("webhooks")
        assert consumer.rebind() and asked == [True, False]  # woken: asked at once
        assert not consumer.rebind()
    finally:
        consumer.close()


def test_a_failing_rebind_drops_its_connection_and_binds_afresh_next_time(settings):
    settings.WAYBILL_BINDINGS_SECONDS = 0.0
    asked, failing = [], [True]

    def bindings(*, bind, resync):
        asked.append(resync)
        if failing.pop(0) if failing else False:
            raise ConnectionError("broker gone")
        return False

    consumer = ContextConsumer(_with_bindings(bindings))
    try:
        with pytest.raises(ConnectionError):
            consumer.rebind()
        consumer.rebind()
        assert asked == [True, True]
    finally:
        consumer.close()


def test_declare_binds_what_the_function_asks_and_survives_one_that_fails(monkeypatch, caplog):
    def failing(*, bind, resync):
        raise RuntimeError("its database is down")

    registered = {c.name: c for c in contexts.all_contexts()}
    monkeypatch.setattr(contexts, "_contexts", {**registered, "webhooks": _with_bindings(failing)})
    with Connection("memory://") as connection, caplog.at_level(logging.ERROR, logger="waybill.bus"):
        bus.declare(connection)  # every other context's queue is declared all the same
        assert connection.default_channel.queue_declare("waybill.readmodels", passive=True)
    assert "bindings of webhooks not reconciled" in caplog.text
