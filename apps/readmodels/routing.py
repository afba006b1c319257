from django.urls import path

from .live import OrdersSocket

websocket_urlpatterns = [path("ws/v1/orders/", OrdersSocket.as_asgi())]
