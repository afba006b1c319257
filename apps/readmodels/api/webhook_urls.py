"""Webhook subscription routes (see apps/readmodels/webhooks)."""

from django.urls import path

from ..webhooks.api.views import WebhookDeliveryListApi, WebhookEndpointDetailApi, WebhookEndpointListApi

urlpatterns = [
    path("", WebhookEndpointListApi.as_view(), name="webhooks"),
    path("<uuid:endpoint_id>/", WebhookEndpointDetailApi.as_view(), name="webhook"),
    path("<uuid:endpoint_id>/deliveries/", WebhookDeliveryListApi.as_view(), name="webhook-deliveries"),
]
