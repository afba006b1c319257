from django.urls import path

from .views import (
    CatalogApi, DashboardApi, OrderPageApi, OrderSummaryDetailApi, OrderSummaryListApi, SalesApi, ShopPageApi,
    StockApi,
)

urlpatterns = [
    path("orders/", OrderSummaryListApi.as_view(), name="read-orders"),
    path("orders/<uuid:order_id>/", OrderSummaryDetailApi.as_view(), name="read-order"),
    path("catalog/", CatalogApi.as_view(), name="read-catalog"),
    path("stock/", StockApi.as_view(), name="read-stock"),
    path("dashboard/", DashboardApi.as_view(), name="read-dashboard"),
    path("sales/", SalesApi.as_view(), name="read-sales"),
    # Backend-for-frontend: what one page needs, in one call.
    path("pages/orders/<uuid:order_id>/", OrderPageApi.as_view(), name="page-order"),
    path("pages/shop/", ShopPageApi.as_view(), name="page-shop"),
]
