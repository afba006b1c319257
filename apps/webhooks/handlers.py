"""The webhooks consumer: each public event becomes pending deliveries, in the inbox
transaction. Sending is ``services.webhook_deliveries_send_due``, the consumer's periodic job."""

from __future__ import annotations

from apps.orders import contracts as orders
from waybill.api import Envelope, Message

from . import services
from .events import EVENTS


def on_event(envelope: Envelope, payload: Message) -> None:
    # Order events concern one customer: only their endpoints (and staff's) get them.
    customer_id = payload.customer_id if isinstance(payload, orders.OrderSnapshot) else None
    services.webhook_deliveries_create(envelope=envelope, data=payload.model_dump(mode="json"),
                                       customer_id=customer_id)


HANDLERS = {schema: on_event for schema in EVENTS}
