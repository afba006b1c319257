"""Query models, built only from messages. Each row carries the version of the aggregate
it mirrors, so an older message never moves it backwards."""

from django.db import models

from waybill.inbox import DeadLetterBase, InboxMessageBase
from waybill.outbox import OutboxMessageBase

from .webhooks.models import (  # noqa: F401  (Django finds models through this module)
    WebhookAttempt, WebhookDeadLetter, WebhookDelivery, WebhookEndpoint, WebhookInbox,
)


class OrderSummary(models.Model):
    order_id = models.UUIDField(primary_key=True)
    customer_id = models.BigIntegerField(db_index=True)
    status = models.CharField(max_length=16)
    reason = models.TextField(blank=True)
    lines = models.JSONField()  # [{sku, name, quantity, unit_price}]
    total = models.DecimalField(max_digits=12, decimal_places=2)
    version = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name_plural = "order summaries"

    def __str__(self) -> str:
        return f"{self.order_id} {self.status} v{self.version}"


class CatalogItem(models.Model):
    sku = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    available = models.PositiveIntegerField()
    version = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} ({self.available} available)"


class OutboxMessage(OutboxMessageBase):
    pass


class InboxMessage(InboxMessageBase):
    pass


class DeadLetter(DeadLetterBase):
    pass


class Stream(models.Model):
    """A feed of read-model changes that a client follows and can resume.

    ``position`` counts the changes recorded on it. A projection bumps it with a row lock
    held until its transaction commits, so positions on one stream commit in order: a
    client that has seen position N has seen every change up to N (an auto-increment id
    gives no such promise, since ids are handed out before commit)."""

    name = models.CharField(max_length=100, primary_key=True)
    position = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} @{self.position}"


class Change(models.Model):
    """One change of one read-model row, recorded in the projection's transaction: what
    a reconnecting client is sent when it says the last position it saw."""

    stream = models.CharField(max_length=100)
    position = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=32)  # what ``document`` is: order, catalog_item, ...
    key = models.CharField(max_length=64)  # the row's identity within its kind
    version = models.PositiveBigIntegerField()  # the row's version after this change
    document = models.JSONField()
    recorded_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "position"], name="readmodels_change_position")]
        indexes = [models.Index(fields=["recorded_at"], name="readmodels_change_recorded")]

    def __str__(self) -> str:
        return f"{self.stream}#{self.position} {self.kind} {self.key} v{self.version}"
