from django.apps import apps
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from waybill import health

from .auth import ThrottledLoginView, TokenObtainView

# A process serves the API of the contexts it hosts (WAYBILL_CONTEXTS) and nothing else.
# The gateway (launcher/deployment.py ROUTES) sends each prefix to its context's service.
CONTEXT_APIS = {
    "orders": {"orders/": "apps.orders.api.urls"},
    "inventory": {"inventory/": "apps.inventory.api.urls"},
    "readmodels": {"read/": "apps.readmodels.api.urls", "events/": "apps.readmodels.api.events_urls",
                   "webhooks/": "apps.readmodels.api.webhook_urls"},
}
api_v1 = [path("auth/token/", TokenObtainView.as_view(), name="auth-token")] + [
    path(prefix, include(module))
    for label, mounts in CONTEXT_APIS.items()
    if apps.is_installed(f"apps.{label}")
    for prefix, module in mounts.items()
]

# A body over the size limit is a 413, whichever view read it (config/api.py).
handler400 = "config.api.bad_request"

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("frontend.urls")),
]
