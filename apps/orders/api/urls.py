from django.urls import path

from .views import OrderCancelApi, OrderDetailApi, OrderPlaceApi

urlpatterns = [
    path("", OrderPlaceApi.as_view(), name="orders-place"),
    path("<uuid:order_id>/", OrderDetailApi.as_view(), name="orders-detail"),
    path("<uuid:order_id>/cancel/", OrderCancelApi.as_view(), name="orders-cancel"),
]
