"""Live push of read-model changes over Channels.

Projections call ``publish_*`` after their transaction commits; the channel layer (Redis
in services mode) carries the change to every web process, where ``OrdersSocket`` forwards
it to the customer's browsers. Each change carries the read model's version so a client
can tell what it has seen.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer


def customer_group(customer_id: int) -> str:
    return f"orders.customer.{customer_id}"


CATALOG_GROUP = "catalog"


def publish_order_summary(*, customer_id: int, summary: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(
        customer_group(customer_id), {"type": "order.changed", "summary": summary}
    )


def publish_catalog_item(*, item: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(CATALOG_GROUP, {"type": "catalog.changed", "item": item})


class OrdersSocket(AsyncJsonWebsocketConsumer):
    """``/ws/v1/orders/``: the signed-in customer's own order changes, and catalog changes.

    Signed-in users only (the session cookie; the origin is checked by the ASGI router), and
    a customer joins only the group of their own id: there is no way to ask for another's."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.groups_joined = [customer_group(user.id), CATALOG_GROUP]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def dispatch(self, message):
        # Channels' own dispatch closes stale database connections before every message,
        # a round trip through one shared thread that cost about a third of a broadcast's
        # server time at 1,000 sockets (bench/websocket). Nothing here touches the database
        # after connect (where AuthMiddlewareStack loads the user), so skip it.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def order_changed(self, event):
        await self.send_json({"type": "order", "data": event["summary"]})

    async def catalog_changed(self, event):
        await self.send_json({"type": "catalog", "data": event["item"]})
