"""The events an endpoint may subscribe to: the public events of orders and inventory,
by their ``message_type``. Commands and orders' internal payment events are not offered.

Who may have them: an order event concerns one customer, so a customer's endpoint gets
only their own orders' events (staff endpoints get every order's). A product's listing
(name, price) is what the shop window shows anyone. Inventory's other events carry stock
levels and other customers' order ids: staff only."""

from __future__ import annotations

import enum

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders


class Audience(enum.StrEnum):
    PUBLIC = "public"  # anyone
    CUSTOMER = "customer"  # the order's customer, and staff
    STAFF = "staff"


EVENTS = {
    orders.OrderPlaced: Audience.CUSTOMER,
    orders.OrderConfirmed: Audience.CUSTOMER,
    orders.OrderRejected: Audience.CUSTOMER,
    orders.OrderCancelled: Audience.CUSTOMER,
    inventory.ProductListed: Audience.PUBLIC,
    inventory.ProductUpdated: Audience.STAFF,
    inventory.StockReserved: Audience.STAFF,
    inventory.StockReservationRejected: Audience.STAFF,
    inventory.StockReleased: Audience.STAFF,
}
AUDIENCE = {schema.message_type: audience for schema, audience in EVENTS.items()}
EVENT_TYPES = tuple(sorted(AUDIENCE))


def allowed_types(*, staff: bool) -> tuple[str, ...]:
    return EVENT_TYPES if staff else tuple(t for t in EVENT_TYPES if AUDIENCE[t] is not Audience.STAFF)
