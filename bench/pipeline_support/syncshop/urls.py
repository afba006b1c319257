from django.urls import path

from waybill import health

from .views import SyncOrderPlaceApi

urlpatterns = [
    path("api/v1/sync-orders/", SyncOrderPlaceApi.as_view(), name="sync-orders-place"),
    path("healthz", health.healthz, name="healthz"),
]
