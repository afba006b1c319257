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


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "a tracer provider was installed earlier in this process"
    DjangoInstrumentor().instrument(tracer_provider=provider)
    yield exporter
    DjangoInstrumentor().uninstrument()


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
