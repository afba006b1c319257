"""Query models, built only from messages. Each row carries the version of the aggregate
it mirrors, so an older message never moves it backwards."""

from django.db import models

from waybill.inbox import DeadLetterBase, InboxMessageBase
from waybill.outbox import OutboxMessageBase


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
