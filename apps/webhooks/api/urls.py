"""Webhook subscription routes, under /api/v1/webhooks/."""

from django.urls import path

from .views import WebhookDeliveryListApi, WebhookEndpointDetailApi, WebhookEndpointListApi

urlpatterns = [
    path("", WebhookEndpointListApi.as_view(), name="webhooks"),
    path("<uuid:endpoint_id>/", WebhookEndpointDetailApi.as_view(), name="webhook"),
    path("<uuid:endpoint_id>/deliveries/", WebhookDeliveryListApi.as_view(), name="webhook-deliveries"),
]
