"""ASGI entry point: HTTP through Django, WebSockets through Channels (origin-checked; a
browser's session or an API client's token header, see wsauth.py). ``runplatform`` and the
services' web processes serve it with uvicorn."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
django_application = get_asgi_application()  # sets Django up before the imports below

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.apps import apps  # noqa: E402

from .wsauth import WebSocketGate  # noqa: E402

websocket_urlpatterns = []
if apps.is_installed("apps.readmodels"):
    from apps.readmodels.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": WebSocketGate(URLRouter(websocket_urlpatterns)),
    }
)
