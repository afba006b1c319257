"""Webhook endpoints, their deliveries and every attempt, in the webhooks database; plus the
context's outbox, and the inbox and dead letters of its consumer."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from waybill.models import DeadLetterBase, InboxMessageBase, OutboxMessageBase


class WebhookEndpoint(models.Model):
    """Where an integrator wants events, and which ones.

    ``owner_id`` is a user id of the identity database (no foreign key across databases).
    What the owner may receive is decided per delivery from that user's current rights
    (``services._may_receive``), never from a copy: see ``events``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner_id = models.BigIntegerField()
    url = models.URLField(max_length=2000)
    event_types = models.JSONField()  # [message_type, ...]
    # {message_type: version}: the schema version each type's ``data`` is sent in, chosen
    # at registration (the newest, unless the owner names one), so that a new version of
    # an event never changes what a receiver gets; it registers again to move.
    schema_versions = models.JSONField(default=dict)
    # Those of its types the webhooks queue was bound to when last reconciled
    # (``services.webhook_bindings_reconcile``, in the webhooks worker), for an active
    # endpoint; empty for an inactive one. The queue binds only the types some endpoint
    # wants, so a type takes effect for an endpoint only once it is here: every event of it
    # published from then on is on the queue. Deliveries are made for these types alone.
    bound_types = models.JSONField(default=list, editable=False)
    # Needed in clear to sign (an HMAC key cannot be hashed away); shown to the owner once,
    # at registration, and never in the API, the admin or a log afterwards.
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner_id", "active"], name="webhooks_endpoint_owner")]

    def __str__(self) -> str:
        return f"{self.url} ({', '.join(self.event_types)})"

    def schema_version_for(self, message_type: str) -> int:
        # An endpoint without one for the type was registered before endpoints chose a
        # version (or moved from readmodels since): it had v1, the only version then.
        return self.schema_versions.get(message_type, 1)

    @property
    def receiving(self) -> bool:
        """Every type it asked for is bound: the bus brings it all of them."""
        return self.active and set(self.event_types) <= set(self.bound_types)


class WebhookDelivery(models.Model):
    """One event for one endpoint, until it is delivered or given up on.

    ``body`` holds the exact bytes sent (as text), so every retry sends the same body and
    a receiver can deduplicate on the delivery id. Unique per (endpoint, message): a
    message the bus brings twice never makes a second delivery."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # gave up after the last try, or the endpoint was deleted

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.UUIDField()
    event_type = models.CharField(max_length=120)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)  # since creation or the last redeliver
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set by the sender that claimed it; the outcome is recorded only by that claim.
    claim = models.UUIDField(null=True, blank=True, editable=False)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    redeliveries = models.PositiveIntegerField(default=0)
    last_redelivered_at = models.DateTimeField(null=True, blank=True)
    last_redelivered_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "message_id"], name="webhooks_delivery_once"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhooks_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery and what came of it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True)  # the class of failure ("timeout", "HTTP 500"); empty: a 2xx answer
    # What went wrong in full (exception text, the start of the answer): staff only, in the
    # admin, never in the owner's API (it could show what some host answered us).
    detail = models.TextField(blank=True)
    succeeded = models.BooleanField()

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.started_at:%H:%M:%S} {self.status_code or self.error[:40]}"


class OutboxMessage(OutboxMessageBase):
    """Webhooks publish no event of their own (their effect is the HTTP POST); the kernel's
    operations report of this context travels through it, as every context's does."""


class InboxMessage(InboxMessageBase):
    pass


class DeadLetter(DeadLetterBase):
    pass
