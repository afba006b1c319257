from django.urls import path

from .views import ProductDetailApi, ProductListCreateApi

urlpatterns = [
    path("products/", ProductListCreateApi.as_view(), name="inventory-products"),
    path("products/<str:sku>/", ProductDetailApi.as_view(), name="inventory-product"),
]
