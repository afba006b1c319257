"""One order is one trace: the HTTP request, every publish and every consumer's handling
share a trace id, carried across the outbox and the broker in the envelope."""

from decimal import Decimal

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(scope="module")
def _exporter():
    # OpenTelemetry takes a process's tracer provider once: one for every test here.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "a tracer provider was installed earlier in this process"
    DjangoInstrumentor().instrument(tracer_provider=provider)
    yield exporter
    DjangoInstrumentor().uninstrument()


@pytest.fixture
def spans(_exporter):
    _exporter.clear()
    return _exporter


def test_one_order_is_one_trace_across_outbox_broker_and_consumers(pump, spans, django_user_model):
    from apps.inventory import services as inventory

    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    pump.settle()
    spans.clear()

    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("carol"))
    response = client.post("/api/v1/orders/", {"lines": [{"sku": "LAMP-1", "quantity": 1}]}, format="json")
    assert response.status_code == 202
    pump.settle()

    finished = spans.get_finished_spans()
    names = {span.name for span in finished}
    assert {
        "POST api/v1/orders/",
        "publish orders.order_placed",
        "consume orders.order_placed",  # inventory reserves, readmodels projects
        "publish inventory.stock_reserved",
        "consume inventory.stock_reserved",  # orders confirms
        "consume orders.order_confirmed",  # readmodels projects
    } <= names, names
    trace_ids = {span.context.trace_id for span in finished}
    assert len(trace_ids) == 1, f"{len(trace_ids)} traces: {sorted(names)}"


def test_orders_reserved_together_in_one_run_stay_each_in_its_own_trace(pump, spans, django_user_model, monkeypatch):
    from apps.inventory import services as inventory

    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    pump.settle()
    real_many, runs = inventory.stock_reserve_many, []
    monkeypatch.setattr(inventory, "stock_reserve_many",
                        lambda *, requests: runs.append(len(requests)) or real_many(requests=requests))
    spans.clear()

    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("carol"))
    for _ in range(2):
        response = client.post("/api/v1/orders/", {"lines": [{"sku": "LAMP-1", "quantity": 1}]}, format="json")
        assert response.status_code == 202
    pump.settle()

    assert runs == [2]  # both reservations in one call of the batched handler
    by_trace: dict[int, list] = {}
    for span in spans.get_finished_spans():
        by_trace.setdefault(span.context.trace_id, []).append(span)
    assert len(by_trace) == 2, by_trace
    first, second = sorted(by_trace.values(), key=lambda trace_spans: min(s.start_time for s in trace_spans))
    for trace_spans in (first, second):
        names = [span.name for span in trace_spans]
        # Each message of the run has its one consume span, and what answers it is in its trace.
        assert names.count("consume inventory.reserve_stock") == 1, names
        assert {"POST api/v1/orders/", "publish inventory.stock_reserved", "consume inventory.stock_reserved"} <= set(
            names), names
    # The lamp's stock document is recorded once, after both, on behalf of the last order.
    assert [s.name for s in second].count("publish inventory.product_updated") == 1
    assert "publish inventory.product_updated" not in [s.name for s in first]
