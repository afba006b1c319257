import pytest
from apps.inventory import handlers as inv_handlers
from apps.orders import contracts, payments
from waybill.contexts import ExternalCall
import test_saga_properties as tsp

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

def test_mutant_inventory_ignores_cancel(pump, payment_sandbox, settings, monkeypatch):
    monkeypatch.setitem(inv_handlers.HANDLERS, contracts.OrderCancelled, lambda envelope, event: None)
    tsp.test_saga_state_machine(pump, payment_sandbox, settings)

def test_mutant_payments_ignores_cancel(pump, payment_sandbox, settings, monkeypatch):
    monkeypatch.setitem(payments.HANDLERS, contracts.OrderCancelled,
                        ExternalCall(call=lambda e, m: None, record=lambda e, m, r: None))
    tsp.test_saga_state_machine(pump, payment_sandbox, settings)
