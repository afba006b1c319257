from django.urls import path

from . import views

urlpatterns = [
    path("", views.shop, name="shop"),
    path("orders/", views.my_orders, name="my-orders"),
    path("track/", views.order_tracker, name="order-tracker-latest"),
    path("track/<uuid:order_id>/", views.order_tracker, name="order-tracker"),
    path("staff/stock/", views.stock_board, name="stock-board"),
    path("staff/dashboard/", views.dashboard, name="dashboard"),
]
