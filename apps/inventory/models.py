from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q

from waybill.models import DeadLetterBase, InboxMessageBase, OutboxMessageBase

sku_validator = RegexValidator(r"^[A-Z0-9][A-Z0-9-]{0,63}$", "A SKU is upper-case letters, digits and dashes.")


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True, validators=[sku_validator])
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    on_hand = models.PositiveIntegerField()
    reserved = models.PositiveIntegerField(default=0)
    version = models.PositiveBigIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            # The database itself refuses overselling, whatever code path tries it.
            models.CheckConstraint(condition=Q(reserved__lte=F("on_hand")), name="inventory_reserved_within_on_hand"),
            models.CheckConstraint(condition=Q(price__gte=0), name="inventory_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} ({self.available} available)"

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Reservation(models.Model):
    """At most one per order: what inventory holds (or refused to hold) for it."""

    class Status(models.TextChoices):
        RESERVED = "reserved"
        REJECTED = "rejected"
        RELEASED = "released"
        # The cancellation arrived before the order: nothing may be reserved for it later.
        CANCELLED = "cancelled"

    order_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    lines = models.JSONField(default=list)
    reason = models.TextField(blank=True)
    version = models.PositiveBigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reservation for {self.order_id} ({self.status})"


class OutboxMessage(OutboxMessageBase):
    pass


class InboxMessage(InboxMessageBase):
    pass


class DeadLetter(DeadLetterBase):
    pass
