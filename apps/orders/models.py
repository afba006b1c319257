import uuid

from django.db import models
from django.db.models import Q

from waybill.inbox import DeadLetterBase, InboxMessageBase
from waybill.outbox import OutboxMessageBase


class Order(models.Model):
    """The order aggregate: its lines, its customer, where it stands, and a version that
    grows with every change (the read side and clients use it to order what they see)."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        CONFIRMED = "CONFIRMED"
        REJECTED = "REJECTED"
        CANCELLED = "CANCELLED"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer_id = models.BigIntegerField(db_index=True)  # an id from auth, never a foreign key
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField(blank=True)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    version = models.PositiveBigIntegerField(default=1)
    idempotency_key = models.CharField(max_length=200, blank=True)
    # What the idempotent request asked for, so a reused key with another body is refused.
    request_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer_id", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="orders_one_order_per_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)  # copied at placing time, like the price
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["order", "sku"], name="orders_one_line_per_sku")]


class ProductCopy(models.Model):
    """What inventory told us about a product (its state documents): enough to validate
    and price an order without asking inventory."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    version = models.PositiveBigIntegerField()

    class Meta:
        verbose_name_plural = "product copies"

    def __str__(self) -> str:
        return self.sku


class OutboxMessage(OutboxMessageBase):
    pass


class InboxMessage(InboxMessageBase):
    pass


class DeadLetter(DeadLetterBase):
    pass
