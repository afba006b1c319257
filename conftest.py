"""Shared fixtures: a clean in-memory broker per test, and a synchronous message pump
that runs the real relay and consumer code step by step (no threads, no sleeps)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from django.conf import settings
from kombu.transport import memory

from waybill import bus, contexts
from waybill.consumer import ContextConsumer, Outcome
from waybill.relay import Relay


def _bind_the_repos_tests_package() -> None:
    """``tests`` (tests.poison, tests.api_limits_urls, ...) is this repo's folder, a
    namespace package, and a regular package of that name anywhere on sys.path wins over a
    namespace one, whatever the order: ``make bench`` installs one into the same virtualenv
    (request-id-django-log, which django-outbox-pattern needs, ships a top-level ``tests``).
    Bind the name to the folder before any test module imports it."""
    spec = importlib.machinery.PathFinder.find_spec("tests", [str(Path(__file__).parent)])
    if spec is not None:
        sys.modules["tests"] = importlib.util.module_from_spec(spec)


_bind_the_repos_tests_package()


class Pump:
    """Moves messages like the runtime does, but one deterministic step at a time."""

    def __init__(self):
        self.connection = bus.connect()
        bus.declare(self.connection)
        self.consumers = {ctx.name: ContextConsumer(ctx) for ctx in contexts.all_contexts()}

    def relay(self, context_name: str | None = None) -> int:
        names = [context_name] if context_name else [c.name for c in contexts.all_contexts() if c.relay]
        published = 0
        for name in names:
            relay = Relay(contexts.get(name))
            try:
                published += relay.drain()
            finally:
                relay.close()
        return published

    def deliver(self, context_name: str) -> list[Outcome]:
        """Consume everything waiting on the context's queue, in batches as the consumer
        takes them (``WAYBILL_CONSUMER_BATCH_SIZE``); returns each outcome."""
        outcomes = []
        for queue in bus.context_queues(contexts.get(context_name)):
            bound = queue(self.connection.default_channel)
            while batch := self._take(bound):
                outcomes += self.consumers[context_name].on_messages(batch)
        return outcomes

    @staticmethod
    def _take(queue) -> list:
        batch = []
        while len(batch) < settings.WAYBILL_CONSUMER_BATCH_SIZE and \
                (message := queue.get(no_ack=False, accept=[bus.JSON])) is not None:
            batch.append(message)
        return batch

    def rebind(self, context_name: str) -> bool:
        """Run the bindings job of a consumer whose bindings are chosen at run time, as its
        scheduler does (due at once after a change made in this process)."""
        return self.consumers[context_name].rebind()

    def publish(self, body: str) -> None:
        """Publish an envelope where the relay would: to the exchange, routed by its type,
        so it reaches exactly the queues bound to it."""
        envelope = json.loads(body)
        exchange, routing_key = bus.route(envelope["type"], envelope["schema_version"], envelope["aggregate_id"])
        self.connection.Producer().publish(body, exchange=exchange, routing_key=routing_key,
                                           content_type=bus.JSON, content_encoding="utf-8")

    def publish_raw(self, context_name: str, body: str | bytes, *, content_type: str = bus.JSON) -> None:
        """Put a message straight onto a context's queue, as a misbehaving producer would."""
        producer = self.connection.Producer()
        producer.publish(body, exchange="", routing_key=bus.queue_name(context_name),
                         content_type=content_type, content_encoding="utf-8")

    def settle(self, max_rounds: int = 20) -> None:
        """Relay and deliver until nothing moves any more."""
        for _ in range(max_rounds):
            moved = self.relay()
            for name in self.consumers:
                moved += len(self.deliver(name))
            if not moved:
                return
        raise AssertionError("messages still moving after %d rounds" % max_rounds)


@pytest.fixture(scope="session")
def payment_sandbox(tmp_path_factory):
    """The payment provider's sandbox, as a real HTTP process (see paymentsandbox)."""
    from paymentsandbox.process import SandboxProcess

    with SandboxProcess(tmp_path_factory.mktemp("payment-sandbox")) as sandbox:
        yield sandbox


@pytest.fixture
def pump(payment_sandbox, settings):
    """Use with ``@pytest.mark.django_db(transaction=True, databases="__all__")``: outbox
    wake-ups and the relay need real commits on every context's database."""
    from apps.orders import payments

    settings.WAYBILL_PAYMENT_GATEWAY_URL = payment_sandbox.url
    payment_sandbox.configure(latency_ms=0, failure_rate=0.0, outage=False)
    payments.breaker.cache_clear()  # a fresh, closed circuit per test
    memory.Channel.queues.clear()
    memory.Transport.global_state.clear()
    pump = Pump()
    yield pump
    for consumer in pump.consumers.values():
        consumer.close()
    pump.connection.release()

