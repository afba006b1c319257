from django.urls import path

from .views import CatalogApi, OrderSummaryDetailApi, OrderSummaryListApi

urlpatterns = [
    path("orders/", OrderSummaryListApi.as_view(), name="read-orders"),
    path("orders/<uuid:order_id>/", OrderSummaryDetailApi.as_view(), name="read-order"),
    path("catalog/", CatalogApi.as_view(), name="read-catalog"),
]
