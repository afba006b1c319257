"""uvicorn bench.pipeline_support.syncshop.asgi:application (HTTP only)."""

import os

os.environ.setdefault("WAYBILL_CONTEXTS", "orders,inventory")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.pipeline_support.syncshop.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
