"""WebSocket routes of the read side (the protocol: live/sockets.py's docstring)."""

from django.urls import path

from .live.sockets import CatalogSocket, DashboardSocket, OrdersSocket, StockSocket, StreamsSocket

websocket_urlpatterns = [
    path("ws/v1/streams/", StreamsSocket.as_asgi()),
    path("ws/v1/orders/", OrdersSocket.as_asgi()),
    path("ws/v1/catalog/", CatalogSocket.as_asgi()),
    path("ws/v1/stock/", StockSocket.as_asgi()),
    path("ws/v1/dashboard/", DashboardSocket.as_asgi()),
]
