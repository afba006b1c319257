from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from waybill import catalog, health

from .auth import ThrottledLoginView, TokenObtainView
from .metrics import metrics_page

# A process serves the API of the contexts it hosts (WAYBILL_CONTEXTS) and nothing else,
# mounted where each manifest says; the gateway sends each prefix to its context's service.
api_v1 = [path("auth/token/", TokenObtainView.as_view(), name="auth-token")] + [
    path(prefix, include(module))
    for name in settings.WAYBILL_CONTEXTS
    for prefix, module in settings.WAYBILL_MANIFESTS[name].api.items()
]

# A body over the size limit is a 413, whichever view read it (config/api.py).
handler400 = "config.api.bad_request"

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # The bus's message catalog (AsyncAPI 3.0), beside the HTTP API's.
    path("api/asyncapi.json", catalog.catalog_json, name="asyncapi-json"),
    path("api/asyncapi/", catalog.catalog_page, name="asyncapi"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # This process's Prometheus figures, to staff and the metrics token (config/metrics.py).
    path("metrics", metrics_page, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("frontend.urls")),
]
