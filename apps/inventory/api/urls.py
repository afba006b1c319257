from django.urls import path

from .views import ProductDetailApi, ProductLedgerApi, ProductListCreateApi

urlpatterns = [
    path("products/", ProductListCreateApi.as_view(), name="inventory-products"),
    path("products/<str:sku>/", ProductDetailApi.as_view(), name="inventory-product"),
    path("products/<str:sku>/ledger/", ProductLedgerApi.as_view(), name="inventory-product-ledger"),
]
