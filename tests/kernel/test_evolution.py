"""Event evolution in the consumer's read path: a handler sees only the version it reads;
older messages come up through the upcasters, newer ones down through the downcasters,
step by step; a missing step is refused at start-up; a version nobody here knows yet is
dead-lettered with the versions known, and replays once the code that reads it ships."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.readmodels.models import DeadLetter, InboxMessage, OutboxMessage
from waybill import contexts, messages, operations
from waybill.consumer import ContextConsumer, Outcome, PermanentFailure
from waybill.messages import Message, downcaster, message, upcaster
from waybill.wire import Received

pytestmark = pytest.mark.django_db(transaction=True, databases=["readmodels"])

TYPE = "parcels.parcel_weighed"


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """The registry as the platform has it, with this module's parcels added only here."""
    monkeypatch.setattr(messages, "_registry", dict(messages._registry))
    monkeypatch.setattr(messages, "_steps", dict(messages._steps))


# Three versions of one event, as a shop would evolve it: v1 grams as a number; v2 the
# weight as amount and unit; v3 adds who weighed it.
def _v1():
    @message(TYPE, version=1)
    class ParcelWeighedV1(Message):
        parcel: str
        grams: int

    return ParcelWeighedV1


def _v2():
    class Weight(Message):
        amount: int
        unit: str

    @message(TYPE, version=2)
    class ParcelWeighedV2(Message):
        parcel: str
        weight: Weight

    @upcaster(TYPE, from_version=1)
    def weight_with_its_unit(payload: dict) -> dict:
        return {"parcel": payload["parcel"], "weight": {"amount": payload["grams"], "unit": "g"}}

    @downcaster(TYPE, from_version=2)
    def weight_in_grams(payload: dict) -> dict:
        factor = {"g": 1, "kg": 1000}[payload["weight"]["unit"]]
        return {"parcel": payload["parcel"], "grams": payload["weight"]["amount"] * factor}

    return ParcelWeighedV2


def _v3():
    @message(TYPE, version=3)
    class ParcelWeighedV3(Message):
        parcel: str
        weight: dict
        weighed_by: str = "unknown"

    @upcaster(TYPE, from_version=2)
    def nobody_said(payload: dict) -> dict:
        return {**payload, "weighed_by": "unknown"}

    return ParcelWeighedV3


def _consumer(schema, seen: list) -> ContextConsumer:
    context = contexts.BoundedContext(
        name="parcels", database="readmodels", outbox=OutboxMessage, inbox=InboxMessage, dead_letters=DeadLetter,
        handlers={schema: lambda envelope, payload: seen.append((envelope.schema_version, payload))})
    contexts._check_versions(context)
    return ContextConsumer(context)


def _body(version: int, payload: dict) -> bytes:
    return json.dumps({
        "id": str(uuid.uuid4()), "type": TYPE, "schema_version": version, "aggregate_id": "P-1",
        "aggregate_version": 1, "occurred_at": datetime.now(UTC).isoformat(), "correlation_id": str(uuid.uuid4()),
        "payload": payload,
    }).encode()


def _deliver(consumer: ContextConsumer, version: int, payload: dict) -> Outcome:
    return consumer.handle(Received.of(_body(version, payload), content_type="application/json"))


def test_a_handler_on_v2_reads_v1_through_the_upcaster_and_sees_only_v2():
    _v1()
    v2, seen = _v2(), []
    consumer = _consumer(v2, seen)
    assert _deliver(consumer, 1, {"parcel": "P-1", "grams": 1200}) is Outcome.APPLIED
    assert _deliver(consumer, 2, {"parcel": "P-2", "weight": {"amount": 3, "unit": "kg"}}) is Outcome.APPLIED
    assert seen == [(2, v2(parcel="P-1", weight={"amount": 1200, "unit": "g"})),
                    (2, v2(parcel="P-2", weight={"amount": 3, "unit": "kg"}))]


def test_steps_compose_from_v1_to_v3():
    _v1(), _v2()
    v3, seen = _v3(), []
    assert _deliver(_consumer(v3, seen), 1, {"parcel": "P-1", "grams": 5}) is Outcome.APPLIED
    assert seen == [(3, v3(parcel="P-1", weight={"amount": 5, "unit": "g"}, weighed_by="unknown"))]


def test_a_handler_still_on_v1_reads_v2_through_the_downcaster():
    v1, _ = _v1(), _v2()
    seen = []
    assert _deliver(_consumer(v1, seen), 2, {"parcel": "P-1", "weight": {"amount": 2, "unit": "kg"}}) is Outcome.APPLIED
    assert seen == [(1, v1(parcel="P-1", grams=2000))]


def test_a_missing_step_is_refused_at_start_up_naming_it():
    v1, _, _ = _v1(), _v2(), _v3()  # no downcaster from v3
    with pytest.raises(ImproperlyConfigured, match=r"parcels.parcel_weighed v3 -> v2: no downcaster"):
        _consumer(v1, [])


def test_a_step_whose_result_is_not_the_version_it_claims_is_dead_lettered_with_the_reason():
    _v1()
    v2 = _v2()
    # A step that forgets a field (registering a second one is refused, so set it by hand).
    messages._steps[(TYPE, 1, 2)] = lambda payload: {"parcel": payload["parcel"]}
    assert _deliver(_consumer(v2, []), 1, {"parcel": "P-1", "grams": 1}) is Outcome.DEAD_LETTERED
    letter = DeadLetter.objects.get()
    assert letter.reason.startswith("parcels.parcel_weighed v1 read as v2 is invalid: weight: Field required")
    assert letter.envelope["schema_version"] == 1  # what came, not what it was read as


def test_a_version_not_known_here_is_dead_lettered_with_the_known_ones_and_replays_once_it_ships():
    _v1()
    v2, seen = _v2(), []
    body = {"parcel": "P-1", "weight": {"amount": 7, "unit": "g"}, "weighed_by": "ann"}
    assert _deliver(_consumer(v2, seen), 3, body) is Outcome.DEAD_LETTERED
    letter = DeadLetter.objects.get()
    assert "unsupported schema version 3 of 'parcels.parcel_weighed' (known: [1, 2])" in letter.reason
    # The consumer's next release knows v3 (and its handler moves to it): the dead letter
    # replays through the normal path.
    v3 = _v3()
    consumer = _consumer(v3, seen)
    assert operations.dead_letter_replay(dead_letter=letter) == operations.Redrive.REDRIVEN
    assert consumer.retry_due() == 1
    assert seen == [(3, v3(**body))]
    assert InboxMessage.objects.get().status == "processed"


def test_a_step_that_cannot_convert_a_message_refuses_it_with_the_reason():
    v1, _ = _v1(), _v2()
    # The downcaster knows grams and kilograms only: a v1 reader cannot be told pounds.
    assert _deliver(_consumer(v1, []), 2, {"parcel": "P-1", "weight": {"amount": 2, "unit": "lb"}}) \
        is Outcome.DEAD_LETTERED
    assert DeadLetter.objects.get().reason == "parcels.parcel_weighed v2 -> v1 failed: KeyError: 'lb'"


def test_inbox_rows_and_dead_letters_keep_the_message_as_published_not_as_read():
    _v1(), _v2(), _v3()
    downcaster(TYPE, from_version=3)(lambda payload: {k: v for k, v in payload.items() if k != "weighed_by"})
    v2 = messages.spec_for(TYPE, 2).schema
    published = {"parcel": "P-1", "weight": {"amount": 7, "unit": "g"}, "weighed_by": "ann"}
    assert _deliver(_consumer(v2, []), 3, published) is Outcome.APPLIED
    row = InboxMessage.objects.get()
    assert (row.envelope["schema_version"], row.envelope["payload"]) == (3, published)

    def refuses(envelope, payload):
        raise PermanentFailure("no such parcel")

    context = contexts.BoundedContext(name="parcels", database="readmodels", outbox=OutboxMessage,
                                      inbox=InboxMessage, dead_letters=DeadLetter, handlers={v2: refuses})
    assert _deliver(ContextConsumer(context), 3, {**published, "parcel": "P-2"}) is Outcome.DEAD_LETTERED
    letter = DeadLetter.objects.get()
    # Replayed once the reader moves to v3, it still has who weighed it.
    assert letter.envelope["schema_version"] == 3 and letter.envelope["payload"]["weighed_by"] == "ann"
    assert json.loads(bytes(letter.body))["payload"]["weighed_by"] == "ann"
