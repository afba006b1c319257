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


def stream_group(stream: str) -> str:
    """The channel group of a change-log stream (stream names are valid group names)."""
    return f"stream.{stream}"


def publish_change(*, stream: str, change: dict) -> None:
    """Push one recorded change (``changes.change_as_message``) to the stream's sockets."""
    async_to_sync(get_channel_layer().group_send)(stream_group(stream), {"type": "change.pushed", "change": change})


class OrdersSocket(AsyncJsonWebsocketConsumer):
    """``/ws/v1/orders/``: the signed-in customer's own order changes, and catalog changes.

    Signed-in users only (the session cookie; the origin is checked by the ASGI router), and
    a customer joins only the group of their own id: there is no way to ask for another's."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.groups_joined = [stream_group(f"orders.customer.{user.id}"), stream_group("catalog")]
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

    async def change_pushed(self, event):
        change = event["change"]
        kind = {"order": "order", "catalog_item": "catalog"}.get(change["kind"])
        if kind:
            await self.send_json({"type": kind, "data": {**change["data"], "committed_at": change.get("committed_at")}})
