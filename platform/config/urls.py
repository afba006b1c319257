from django.apps import apps
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from waybill import health

from .auth import TokenObtainView

# A process serves the API of the contexts it hosts (WAYBILL_CONTEXTS) and nothing else.
CONTEXT_APIS = {"orders": "orders/", "inventory": "inventory/", "readmodels": "read/"}
api_v1 = [path("auth/token/", TokenObtainView.as_view(), name="auth-token")] + [
    path(prefix, include(f"apps.{label}.api.urls"))
    for label, prefix in CONTEXT_APIS.items()
    if apps.is_installed(f"apps.{label}")
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("frontend.urls")),
]
