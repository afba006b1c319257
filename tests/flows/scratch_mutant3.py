import pytest
from apps.orders import contracts, payments
from waybill.contexts import ExternalCall
import test_saga_properties as tsp

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

def old_refund(envelope, message):
    return payments._post("/v1/refunds", {"reference": str(message.order_id)}, idempotency_key=f"refund-{message.order_id}")

def test_mutant_refund_key_per_order(pump, payment_sandbox, settings, monkeypatch):
    for schema in (contracts.RefundPayment, contracts.OrderCancelled):
        monkeypatch.setitem(payments.HANDLERS, schema, ExternalCall(call=old_refund, record=payments._record_refund))
    tsp.test_saga_state_machine(pump, payment_sandbox, settings)
