"""Reads of webhooks. An owner sees only their own active endpoints."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from .models import WebhookDelivery, WebhookEndpoint


def webhook_endpoints_for_owner(*, owner_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner_id=owner_id, active=True).order_by("-created_at")


def webhook_endpoint_for_owner(*, endpoint_id: UUID, owner_id: int) -> WebhookEndpoint | None:
    return webhook_endpoints_for_owner(owner_id=owner_id).filter(pk=endpoint_id).first()


def webhook_deliveries_of(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at")
