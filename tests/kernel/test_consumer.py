"""Invariants 3 and 8 on the bus: a message applies at most once, and a bad message is
dead-lettered with its reason while the ones behind it keep flowing."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DataError, IntegrityError, OperationalError
from django.test import override_settings
from django.utils import timezone
from kombu.message import Message as KombuMessage

from apps.inventory import services as inventory
from apps.inventory.models import DeadLetter, InboxMessage, Product
from apps.inventory import contracts as inventory_contracts
from apps.readmodels.models import DeadLetter as ReadDeadLetter
from apps.readmodels.models import InboxMessage as ReadInbox
from apps.readmodels.models import OrderSummary
from apps.webhooks import services as webhooks
from apps.webhooks.models import DeadLetter as WebhookDeadLetter
from launcher.polling import wait_for
from tests.poison import POISONS, Poison, order_placed, publish
from waybill import bus, contexts, operations
from waybill.api import Batched
from waybill.consumer import ContextConsumer, Outcome, PermanentFailure

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _envelope(type="inventory.reserve_stock", version=1, payload=None, **overrides) -> dict:
    order_id = uuid.uuid4()
    if payload is None:
        payload = inventory_contracts.ReserveStock(
            order_id=order_id, lines=[inventory_contracts.StockLine(sku="LAMP-1", quantity=1)],
        ).model_dump(mode="json")
    return {
        "id": str(uuid.uuid4()), "type": type, "schema_version": version, "aggregate_id": str(order_id),
        "aggregate_version": 1, "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": str(uuid.uuid4()), "causation_id": None, "traceparent": None,
        "payload": payload, **overrides,
    }


@pytest.fixture
def lamp(pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=10)
    pump.relay()  # clear the creation's document out of the way
    pump.settle()
    return Product.objects.get(sku="LAMP-1")


def _reserved() -> int:
    return Product.objects.get(sku="LAMP-1").reserved


def test_duplicate_delivery_has_one_effect(pump, lamp):
    body = json.dumps(_envelope())
    pump.publish_raw("inventory", body)
    pump.publish_raw("inventory", body)
    assert pump.deliver("inventory") == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert _reserved() == 1
    assert InboxMessage.objects.get().status == "processed"


@override_settings(WAYBILL_RETRY_MAX_ATTEMPTS=3)
def test_failing_handler_is_retried_with_backoff_then_dead_lettered(pump, lamp, monkeypatch):
    def outage(**kwargs):
        raise ConnectionError("inventory database went away")

    monkeypatch.setattr(inventory, "stock_reserve", outage)
    envelope = _envelope()
    pump.publish_raw("inventory", json.dumps(envelope))
    consumer = ContextConsumer(contexts.get("inventory"))
    assert pump.deliver("inventory") == [Outcome.RETRY_SCHEDULED]
    row = InboxMessage.objects.get()
    assert (row.status, row.attempts) == ("retrying", 1) and "went away" in row.last_error
    assert consumer.retry_due() == 1  # base delay is 0 in test settings
    assert consumer.retry_due() == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("dead", 3)
    letter = DeadLetter.objects.get()
    assert letter.attempts == 3 and "gave up after 3 attempts" in letter.reason
    assert letter.envelope["id"] == envelope["id"]
    assert consumer.retry_due() == 0

    # The operator fixes the cause and replays: the message applies exactly once.
    monkeypatch.undo()
    assert operations.dead_letter_replay(dead_letter=letter) == operations.Redrive.REDRIVEN
    assert consumer.retry_due() == 1
    assert InboxMessage.objects.get().status == "processed"
    assert _reserved() == 1


def test_retry_recovers_a_transient_failure(pump, lamp, monkeypatch):
    real, calls = inventory.stock_reserve, []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("transient")
        return real(**kwargs)

    monkeypatch.setattr(inventory, "stock_reserve", flaky)
    pump.publish_raw("inventory", json.dumps(_envelope()))
    assert pump.deliver("inventory") == [Outcome.RETRY_SCHEDULED]
    assert ContextConsumer(contexts.get("inventory")).retry_due() == 1
    assert InboxMessage.objects.get().status == "processed"
    assert _reserved() == 1


def test_permanent_failure_skips_the_retries(pump, lamp, monkeypatch):
    def refuse(**kwargs):
        raise PermanentFailure("order references a retired warehouse")

    monkeypatch.setattr(inventory, "stock_reserve", refuse)
    pump.publish_raw("inventory", json.dumps(_envelope()))
    assert pump.deliver("inventory") == [Outcome.DEAD_LETTERED]
    assert "retired warehouse" in DeadLetter.objects.get().reason


def test_handler_failure_rolls_back_its_partial_effects(pump, lamp, monkeypatch):
    from apps.inventory import handlers

    def half_done(envelope, event):
        inventory.product_update(sku="LAMP-1", on_hand=99)
        raise RuntimeError("crashed after writing")

    monkeypatch.setitem(handlers.HANDLERS, inventory_contracts.ReserveStock, half_done)
    pump.publish_raw("inventory", json.dumps(_envelope()))
    assert pump.deliver("inventory") == [Outcome.RETRY_SCHEDULED]
    assert Product.objects.get(sku="LAMP-1").on_hand == 10


@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
def test_every_poison_message_is_dead_lettered_exactly_and_the_next_order_still_applies(pump, poison):
    """Issue 10: each of these crashed the workers or was stored mangled. Each consumer
    bound to the routing key keeps the exact bytes with the reason, then applies the next
    order as if nothing happened."""
    # Webhooks' queue binds order_placed only while some endpoint wants it.
    webhooks.webhook_endpoint_register(owner_id=1, owner_is_staff=True, url="https://example.com/hooks",
                                       event_types=["orders.order_placed"])
    assert pump.rebind("webhooks")
    channel = pump.connection.default_channel
    publish(channel, poison)
    good = order_placed()
    publish(channel, Poison("good", json.dumps(good).encode(), ""))
    for name, dead_letters in (("readmodels", ReadDeadLetter), ("webhooks", WebhookDeadLetter)):
        assert pump.deliver(name) == [Outcome.DEAD_LETTERED, Outcome.APPLIED], name
        letter = dead_letters.objects.get()
        assert poison.reason in letter.reason
        assert bytes(letter.body) == poison.body and letter.body_size == len(poison.body)
        assert letter.content_type == (poison.content_type or "")
        assert letter.headers["x-poison"] == poison.name
        assert len(letter.preview) < 2 * settings.WAYBILL_MESSAGE_PREVIEW_BYTES
    assert OrderSummary.objects.filter(order_id=good["aggregate_id"]).exists()


def _take(pump, context_name: str):
    """The next message on the context's queue, unacked, as a consumer gets it."""
    queue = bus.context_queue(contexts.get(context_name))(pump.connection.default_channel)
    return queue.get(no_ack=False)


def _poisoned_then_good(pump) -> dict:
    channel = pump.connection.default_channel
    publish(channel, POISONS[0])
    good = order_placed()
    publish(channel, Poison("good", json.dumps(good).encode(), ""))
    return good


def test_a_dead_letter_that_cannot_be_stored_whole_is_stored_bare(pump, monkeypatch):
    real = ContextConsumer._dead_letter

    def refused_by_the_database(self, received, reason, **known):
        if known.get("envelope") is None and received.body == POISONS[0].body:
            raise DataError("stands in for a column the database refuses")
        return real(self, received, reason, **known)

    good = _poisoned_then_good(pump)
    monkeypatch.setattr(ContextConsumer, "_dead_letter", refused_by_the_database)
    assert pump.deliver("readmodels") == [Outcome.DEAD_LETTERED, Outcome.APPLIED]
    letter = ReadDeadLetter.objects.get()
    assert letter.reason.startswith("could not be handled: DataError")
    assert bytes(letter.body) == POISONS[0].body and letter.envelope is None
    assert OrderSummary.objects.filter(order_id=good["aggregate_id"]).exists()


def test_a_message_no_dead_letter_can_hold_goes_to_the_brokers_dead_letter_exchange(pump, monkeypatch):
    good = _poisoned_then_good(pump)

    def refuse(self, *args, **kwargs):
        raise DataError("the dead-letter table refuses everything")

    monkeypatch.setattr(ReadDeadLetter, "save", refuse)
    consumer, message = pump.consumers["readmodels"], _take(pump, "readmodels")
    rejected = []
    monkeypatch.setattr(message, "reject", lambda requeue=False: rejected.append(requeue))
    monkeypatch.setattr(message, "ack", lambda: pytest.fail("acked a message that was stored nowhere"))
    assert consumer.on_message(message) is Outcome.UNSTORABLE
    assert rejected == [False]  # no requeue: RabbitMQ moves it to waybill.dead
    monkeypatch.undo()
    assert pump.deliver("readmodels") == [Outcome.APPLIED]
    assert OrderSummary.objects.filter(order_id=good["aggregate_id"]).exists()


def test_while_the_database_does_not_answer_the_consumer_waits_and_then_applies_the_message(pump, monkeypatch):
    monkeypatch.setattr("waybill.backoff.backoff_delay", lambda *args, **kwargs: 0)  # the waits, not their length
    good = order_placed()
    publish(pump.connection.default_channel, Poison("good", json.dumps(good).encode(), ""))
    consumer = pump.consumers["readmodels"]
    real_handle = ContextConsumer._handle
    handled, answers = [], iter([False, False, True])  # down for two looks, then back

    def handle_with_the_database_gone_at_first(self, received):
        handled.append(1)
        if len(handled) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_handle(self, received)

    monkeypatch.setattr(ContextConsumer, "_handle", handle_with_the_database_gone_at_first)
    monkeypatch.setattr(ContextConsumer, "_database_answers", lambda self: next(answers))
    assert pump.deliver("readmodels") == [Outcome.APPLIED]
    assert len(handled) == 2 and not ReadDeadLetter.objects.exists()  # it waited: neither dead-lettered nor lost
    assert OrderSummary.objects.filter(order_id=good["aggregate_id"]).exists()

    # Stopping while it waits gives the message back unacked.
    publish(pump.connection.default_channel, Poison("good", json.dumps(order_placed()).encode(), ""))
    handled.clear()
    monkeypatch.setattr(ContextConsumer, "_database_answers", lambda self: consumer.stop.set() or False)
    message = _take(pump, "readmodels")
    monkeypatch.setattr(message, "ack", lambda: pytest.fail("acked a message it never handled"))
    assert consumer.on_message(message) is Outcome.DEFERRED


def test_a_connection_that_broke_and_is_back_is_no_fault_of_the_message(pump, monkeypatch):
    """The database answers again by the time the consumer looks (a terminated backend, a
    failover): the message is handled again, not dead-lettered; an error that keeps
    coming back with the database answering is the message's own."""
    monkeypatch.setattr("waybill.backoff.backoff_delay", lambda *args, **kwargs: 0)
    real_handle = ContextConsumer._handle
    broken = {"times": 1}

    def handle_over_a_broken_connection(self, received):
        if broken["times"]:
            broken["times"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_handle(self, received)

    monkeypatch.setattr(ContextConsumer, "_handle", handle_over_a_broken_connection)
    good = order_placed()
    publish(pump.connection.default_channel, Poison("good", json.dumps(good).encode(), ""))
    assert pump.deliver("readmodels") == [Outcome.APPLIED]
    assert OrderSummary.objects.filter(order_id=good["aggregate_id"]).exists()
    assert not ReadDeadLetter.objects.exists()

    broken["times"] = ContextConsumer.connection_error_tries + 1
    publish(pump.connection.default_channel, Poison("good", json.dumps(order_placed()).encode(), ""))
    assert pump.deliver("readmodels") == [Outcome.DEAD_LETTERED]
    [dead] = ReadDeadLetter.objects.all()
    assert "could not be handled: OperationalError" in dead.reason


def test_retries_go_through_the_bounded_decoder_and_never_raise(pump, monkeypatch):
    consumer = pump.consumers["readmodels"]
    deep = order_placed()
    deep["payload"]["lines"][0]["name"] = json.loads("[" * 40 + "]" * 40)
    broken = order_placed()
    for envelope in (deep, broken):
        ReadInbox.objects.create(message_id=envelope["id"], message_type=envelope["type"], status="retrying",
                                 attempts=1, envelope=envelope, next_attempt_at=timezone.now())

    def crash_outside_the_handler(self, envelope, payload, handler):
        if str(envelope.id) == broken["id"]:
            raise RecursionError("stands in for any bug outside a handler")
        return real(self, envelope, payload, handler)

    real = ContextConsumer._attempt
    monkeypatch.setattr(ContextConsumer, "_attempt", crash_outside_the_handler)
    assert consumer.retry_due() == 2
    assert set(ReadInbox.objects.values_list("status", flat=True)) == {"dead"}
    reasons = sorted(ReadDeadLetter.objects.values_list("reason", flat=True))
    assert len(reasons) == 2
    assert reasons[0].startswith("JSON nested deeper than 32 levels")
    assert reasons[1].startswith("could not be retried: RecursionError")
    assert consumer.retry_due() == 0


# --- batches: one transaction per batch, a savepoint per message -----------------------------

class Crash(BaseException):
    """Stands in for the process dying: nothing catches it, nothing after it runs."""


def _reserve_commands(count: int, *, aggregate_id: str | None = None) -> list[dict]:
    envelopes = [_envelope() for _ in range(count)]
    if aggregate_id:  # one aggregate's commands, in order
        envelopes = [{**e, "aggregate_id": aggregate_id, "aggregate_version": n} for n, e in enumerate(envelopes, 1)]
    return envelopes


def _reserved_orders() -> set[str]:
    from apps.inventory.models import Reservation

    return {str(order_id) for order_id in Reservation.objects.values_list("order_id", flat=True)}


def test_a_poison_message_and_a_failing_handler_in_the_middle_of_a_batch_fail_alone(pump, lamp, monkeypatch):
    from apps.inventory import handlers

    first, failing, last = _reserve_commands(3)
    real = handlers.HANDLERS[inventory_contracts.ReserveStock]

    def half_done_for_one(envelope, event):
        if str(envelope.id) == failing["id"]:
            inventory.product_update(sku="LAMP-1", on_hand=99)  # rolled back with its savepoint
            raise RuntimeError("crashed after writing")
        return real(envelope, event)

    monkeypatch.setitem(handlers.HANDLERS, inventory_contracts.ReserveStock, half_done_for_one)
    for body in (json.dumps(first), b"{not json", json.dumps(failing), json.dumps(last)):
        pump.publish_raw("inventory", body)
    batches = []
    real_on_messages = ContextConsumer.on_messages
    monkeypatch.setattr(ContextConsumer, "on_messages",
                        lambda self, messages: batches.append(len(messages)) or real_on_messages(self, messages))
    assert pump.deliver("inventory") == [Outcome.APPLIED, Outcome.DEAD_LETTERED, Outcome.RETRY_SCHEDULED,
                                         Outcome.APPLIED]
    assert batches == [4]
    assert _reserved_orders() == {first["aggregate_id"], last["aggregate_id"]}
    assert Product.objects.get(sku="LAMP-1").on_hand == 10 and _reserved() == 2
    assert dict(InboxMessage.objects.values_list("message_id", "status")) == {
        uuid.UUID(first["id"]): "processed", uuid.UUID(failing["id"]): "retrying", uuid.UUID(last["id"]): "processed"}
    assert "malformed JSON" in DeadLetter.objects.get().reason
    # The batch's messages were inserted together at its end: the failed one's went with its savepoint.
    from apps.inventory.models import OutboxMessage

    sent_for = set(OutboxMessage.objects.filter(message_type="inventory.stock_reserved")
                   .values_list("aggregate_id", flat=True))
    assert sent_for == {first["aggregate_id"], last["aggregate_id"]}


@pytest.mark.parametrize("handler", ["one message at a time", "the run at once"])
def test_a_crash_before_the_batch_commits_keeps_nothing_and_the_redelivery_applies_each_once(
        pump, lamp, monkeypatch, handler):
    from apps.inventory import handlers

    envelopes = _reserve_commands(3)
    for envelope in envelopes:
        pump.publish_raw("inventory", json.dumps(envelope))
    if handler == "the run at once":
        real_many = inventory.stock_reserve_many

        def dies_after_two(*, requests):
            real_many(requests=requests[:2])
            raise Crash()  # the first two orders are reserved; nothing is committed yet

        monkeypatch.setattr(inventory, "stock_reserve_many", dies_after_two)
    else:
        monkeypatch.setitem(handlers.HANDLERS, inventory_contracts.ReserveStock, handlers.on_reserve_stock)
        real_one, calls = inventory.stock_reserve, []

        def dies_on_the_third(**kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise Crash()  # the first two handlers ran; nothing is committed yet
            return real_one(**kwargs)

        monkeypatch.setattr(inventory, "stock_reserve", dies_on_the_third)
    acks = []
    monkeypatch.setattr(KombuMessage, "ack", lambda self, multiple=False: acks.append(self))
    with pytest.raises(Crash):
        pump.deliver("inventory")
    assert not acks
    assert _reserved() == 0 and not InboxMessage.objects.exists() and not _reserved_orders()

    # RabbitMQ gives a dead consumer's unacked messages to the next (the in-memory
    # transport does not restore them, so they are handed back here).
    monkeypatch.undo()
    for envelope in envelopes:
        pump.publish_raw("inventory", json.dumps(envelope))
    assert pump.deliver("inventory") == [Outcome.APPLIED] * 3
    assert _reserved_orders() == {e["aggregate_id"] for e in envelopes} and _reserved() == 3
    assert InboxMessage.objects.filter(status="processed").count() == 3


def test_one_aggregates_messages_apply_in_order_within_and_across_batches(pump, lamp, monkeypatch, settings):
    settings.WAYBILL_CONSUMER_BATCH_SIZE = 3
    envelopes = _reserve_commands(7, aggregate_id=str(uuid.uuid4()))
    real_one, real_many, seen = inventory.stock_reserve, inventory.stock_reserve_many, []
    monkeypatch.setattr(inventory, "stock_reserve",
                        lambda **kwargs: seen.append(str(kwargs["order_id"])) or real_one(**kwargs))
    monkeypatch.setattr(inventory, "stock_reserve_many",
                        lambda *, requests: seen.extend(str(r.order_id) for r in requests) or real_many(
                            requests=requests))
    # A refused message and a repeat among them: handled where they stand, moving nothing.
    bodies = [json.dumps(e) for e in envelopes]
    bodies[2:2] = [b"{not json"]
    bodies[5:5] = [json.dumps(envelopes[3])]
    for body in bodies:
        pump.publish_raw("inventory", body)
    batches = []
    real_on_messages = ContextConsumer.on_messages
    monkeypatch.setattr(ContextConsumer, "on_messages",
                        lambda self, messages: batches.append(len(messages)) or real_on_messages(self, messages))
    outcomes = pump.deliver("inventory")
    assert outcomes[2] is Outcome.DEAD_LETTERED and outcomes[5] is Outcome.DUPLICATE
    assert outcomes.count(Outcome.APPLIED) == 7
    assert batches == [3, 3, 3]
    assert seen == [e["payload"]["order_id"] for e in envelopes]


def test_a_duplicate_inside_one_batch_and_across_batches_has_one_effect(pump, lamp, settings):
    again, other = (json.dumps(e) for e in _reserve_commands(2))
    for body in (again, other, again):
        pump.publish_raw("inventory", body)
    assert pump.deliver("inventory") == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE]
    settings.WAYBILL_CONSUMER_BATCH_SIZE = 1
    pump.publish_raw("inventory", again)
    assert pump.deliver("inventory") == [Outcome.DUPLICATE]
    assert _reserved() == 2 and InboxMessage.objects.count() == 2


def test_a_batch_that_cannot_commit_is_applied_again_one_message_at_a_time(pump, lamp, monkeypatch):
    """A deadlock, or a concurrent delivery's inbox row, fails the batch's transaction as a
    whole: its effects are gone with it, and each message is applied again alone."""
    from django.db.models.query import QuerySet

    real_bulk_create, failures = QuerySet.bulk_create, []

    def deadlocked_once(self, objs, *args, **kwargs):
        if self.model is InboxMessage and not failures:
            failures.append(len(objs))
            raise OperationalError("deadlock detected")
        return real_bulk_create(self, objs, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "bulk_create", deadlocked_once)
    envelopes = _reserve_commands(3)
    for envelope in envelopes:
        pump.publish_raw("inventory", json.dumps(envelope))
    assert pump.deliver("inventory") == [Outcome.APPLIED] * 3
    assert failures == [3]
    assert _reserved() == 3 and InboxMessage.objects.filter(status="processed").count() == 3


def test_one_orders_events_in_one_batch_record_and_push_its_document_once(pump, settings):
    from apps.readmodels.live import changelog
    from apps.readmodels.models import Change

    placed = order_placed()
    confirmed = order_placed(type="orders.order_confirmed", aggregate_id=placed["aggregate_id"], aggregate_version=2,
                             payload={**placed["payload"], "status": "CONFIRMED"})
    channel = pump.connection.default_channel
    for envelope in (placed, confirmed):
        publish(channel, Poison("good", json.dumps(envelope).encode(), ""))
    assert pump.deliver("readmodels") == [Outcome.APPLIED, Outcome.APPLIED]
    stream = changelog.customer_stream(1)
    [change] = Change.objects.filter(stream=stream)
    summary = OrderSummary.objects.get(order_id=placed["aggregate_id"])
    assert (change.version, change.document["status"]) == (summary.version, "CONFIRMED") == (2, "CONFIRMED")

    # One message per batch: one change each, as before batches.
    settings.WAYBILL_CONSUMER_BATCH_SIZE = 1
    again = order_placed()
    publish(channel, Poison("good", json.dumps(again).encode(), ""))
    publish(channel, Poison("good", json.dumps(order_placed(
        type="orders.order_confirmed", aggregate_id=again["aggregate_id"], aggregate_version=2,
        payload={**again["payload"], "status": "CONFIRMED"})).encode(), ""))
    assert pump.deliver("readmodels") == [Outcome.APPLIED, Outcome.APPLIED]
    assert list(Change.objects.filter(stream=stream, key=again["aggregate_id"]).values_list("version", flat=True)
                .order_by("position")) == [1, 2]


def test_a_batch_publishes_only_the_last_state_document_of_each_entity(pump, lamp):
    """Three reservations of one product in a batch: three events, but the product's state
    document only as it stands after the last (documents supersede one another)."""
    from apps.inventory.models import OutboxMessage

    for envelope in _reserve_commands(3):
        pump.publish_raw("inventory", json.dumps(envelope))
    before = set(OutboxMessage.objects.values_list("id", flat=True))
    assert pump.deliver("inventory") == [Outcome.APPLIED] * 3
    written = OutboxMessage.objects.exclude(id__in=before).order_by("id")
    assert [row.message_type for row in written] == ["inventory.stock_reserved"] * 3 + ["inventory.product_updated"]
    document = written.last()
    assert document.aggregate_version == Product.objects.get(sku="LAMP-1").version
    assert document.envelope["payload"]["reserved"] == 3


def test_a_handler_that_swallows_its_own_database_error_is_retried_not_passed_as_applied(pump, lamp, monkeypatch):
    from apps.inventory import handlers

    first, swallowing = _reserve_commands(2)
    real = handlers.HANDLERS[inventory_contracts.ReserveStock]

    def swallows(envelope, event):
        if str(envelope.id) == swallowing["id"]:
            real(envelope, event)  # its writes and its outbox messages...
            try:  # ...then a failing statement it catches, outside any atomic() of its own
                Product.objects.create(sku="LAMP-1", name="again", price=Decimal("1"), on_hand=1)
            except IntegrityError:
                return None
        return real(envelope, event)

    monkeypatch.setitem(handlers.HANDLERS, inventory_contracts.ReserveStock, swallows)
    for envelope in (first, swallowing):
        pump.publish_raw("inventory", json.dumps(envelope))
    assert pump.deliver("inventory") == [Outcome.APPLIED, Outcome.RETRY_SCHEDULED]
    assert _reserved_orders() == {first["aggregate_id"]}
    assert InboxMessage.objects.get(message_id=swallowing["id"]).status == "retrying"


def test_the_loop_takes_what_has_arrived_as_one_batch_and_a_lone_message_at_once(pump, lamp, monkeypatch):
    """``ContextConsumer.run`` itself: a backlog goes in batches, a message alone goes alone."""
    import threading

    batches = []
    real_on_messages = ContextConsumer.on_messages
    monkeypatch.setattr(ContextConsumer, "on_messages",
                        lambda self, messages: batches.append(len(messages)) or real_on_messages(self, messages))
    envelopes = _reserve_commands(12)
    for envelope in envelopes[:11]:
        pump.publish_raw("inventory", json.dumps(envelope))
    stop = threading.Event()
    thread = threading.Thread(target=ContextConsumer(contexts.get("inventory")).run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: InboxMessage.objects.count() == 11, 15, "the backlog applied")
        pump.publish_raw("inventory", json.dumps(envelopes[11]))
        wait_for(lambda: InboxMessage.objects.count() == 12, 15, "the lone message applied")
    finally:
        stop.set()
        thread.join(15)
    assert batches[0] > 1 and sum(batches) == 12 and batches[-1] == 1
    assert len(_reserved_orders()) == 12  # each decided once (the lamp has 10: two are refused)


def _batched_reserve(monkeypatch, *, many) -> list[list[str]]:
    """inventory's reserve handler with ``many`` in place of its own; the runs it was given."""
    from apps.inventory import handlers

    real, runs = handlers.HANDLERS[inventory_contracts.ReserveStock], []

    def recorded(items):
        runs.append([str(item.envelope.id) for item in items])
        return many(real, items)

    monkeypatch.setitem(handlers.HANDLERS, inventory_contracts.ReserveStock, Batched(one=real.one, many=recorded))
    return runs


def test_a_run_of_one_batched_handlers_messages_is_applied_at_once_each_with_its_own_cause(pump, lamp, monkeypatch):
    from apps.inventory.models import OutboxMessage

    runs = _batched_reserve(monkeypatch, many=lambda real, items: real.many(items))
    first, second = _reserve_commands(2)
    bodies = [json.dumps(first), json.dumps(second), b"{not json", json.dumps(_reserve_commands(1)[0])]
    for body in bodies:
        pump.publish_raw("inventory", body)
    assert pump.deliver("inventory") == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DEAD_LETTERED, Outcome.APPLIED]
    # The refused message is dead-lettered where it stands and is no part of any run: the
    # three valid ones around it are one run, in their order.
    assert runs == [[first["id"], second["id"], json.loads(bodies[3])["id"]]]
    assert _reserved() == 3 and InboxMessage.objects.filter(status="processed").count() == 3
    causes = dict(OutboxMessage.objects.filter(message_type="inventory.stock_reserved")
                  .values_list("aggregate_id", "envelope__causation_id"))
    assert causes[first["aggregate_id"]] == first["id"] and causes[second["aggregate_id"]] == second["id"]


def test_a_run_that_fails_together_is_applied_one_message_at_a_time_and_only_the_failing_one_retries(
        pump, lamp, monkeypatch):
    first, failing, last = _reserve_commands(3)

    def fails(real, items):
        real.many(items)  # its writes go with the run's savepoint
        raise RuntimeError("one of them is bad")

    runs = _batched_reserve(monkeypatch, many=fails)
    real_one = inventory.stock_reserve

    def one(**kwargs):
        if str(kwargs["order_id"]) == failing["aggregate_id"]:
            raise RuntimeError("this one")
        return real_one(**kwargs)

    monkeypatch.setattr(inventory, "stock_reserve", one)
    for envelope in (first, failing, last):
        pump.publish_raw("inventory", json.dumps(envelope))
    assert pump.deliver("inventory") == [Outcome.APPLIED, Outcome.RETRY_SCHEDULED, Outcome.APPLIED]
    assert runs == [[first["id"], failing["id"], last["id"]]]
    assert _reserved_orders() == {first["aggregate_id"], last["aggregate_id"]} and _reserved() == 2
    assert InboxMessage.objects.get(message_id=failing["id"]).status == "retrying"


def test_a_refused_message_is_acked_at_once_so_a_crash_before_the_batch_commits_stores_it_once(
        pump, lamp, monkeypatch):
    first, last = _reserve_commands(2)
    for body in (json.dumps(first), b"{not json", json.dumps(last)):
        pump.publish_raw("inventory", body)

    def dies(*, requests):
        raise Crash()  # the batch's handlers never finish: nothing of it commits

    monkeypatch.setattr(inventory, "stock_reserve_many", dies)
    acked = []
    monkeypatch.setattr(KombuMessage, "ack", lambda self, multiple=False: acked.append(self.body))
    with pytest.raises(Crash):
        pump.deliver("inventory")
    assert acked == [b"{not json"]  # its dead letter was committed, and it was acked then
    assert DeadLetter.objects.count() == 1 and not InboxMessage.objects.exists()

    # RabbitMQ gives back only what was unacked.
    monkeypatch.undo()
    for envelope in (first, last):
        pump.publish_raw("inventory", json.dumps(envelope))
    assert pump.deliver("inventory") == [Outcome.APPLIED] * 2
    assert DeadLetter.objects.count() == 1 and _reserved() == 2
