"""ASGI entry point: HTTP through Django, WebSockets through Channels (origin-checked; a
browser's session or an API client's token header, see wsauth.py). ``runplatform`` and the
services' web processes serve it with uvicorn."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
django_application = get_asgi_application()  # sets Django up before the imports below

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from waybill import metrics  # noqa: E402
from waybill.manifest import resolve  # noqa: E402

from .wsauth import WebSocketGate  # noqa: E402

# The WebSocket routes of the hosted contexts that declare some (their manifests).
websocket_urlpatterns = [
    pattern
    for name in settings.WAYBILL_CONTEXTS
    if (routes := settings.WAYBILL_MANIFESTS[name].websockets)
    for pattern in resolve(routes)
]

# Where WAYBILL_METRICS_ADDR is set, this process's figures on that address too (every
# web process loads this module once; runplatform's runtime shares it).
metrics.serve_configured()

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": WebSocketGate(URLRouter(websocket_urlpatterns)),
    }
)
