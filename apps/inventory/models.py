from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

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


class StockEntry(models.Model):
    """The stock ledger: every change of a product's stock, appended and never changed; the
    product's ``on_hand`` and ``reserved`` are its fold, kept on the product row as an inline
    projection written in the same transaction (``ledger.append``).

    An entry is appended at the product's next version, expecting the version its writer
    read: the row moves only from that version, and (sku, version) is unique, so of two
    writers that read one version exactly one appends. Name and price changes move the
    version too without an entry (they are not stock), so versions may skip."""

    class Kind(models.TextChoices):
        OPENED = "opened"  # the balance a product had when the ledger began (migration)
        RECEIVED = "received"  # a new product's first stock
        ADJUSTED = "adjusted"  # staff set on hand (a count, goods in, a write-off)
        RESERVED = "reserved"  # held for an order
        RELEASED = "released"  # given back from an order

    sku = models.CharField(max_length=64)
    version = models.PositiveBigIntegerField()  # the product's version after this entry
    kind = models.CharField(max_length=16, choices=Kind.choices)
    on_hand_delta = models.IntegerField(default=0)
    reserved_delta = models.IntegerField(default=0)
    order_id = models.UUIDField(null=True, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["sku", "version"]
        verbose_name_plural = "stock entries"
        constraints = [models.UniqueConstraint(fields=["sku", "version"], name="inventory_stock_entry_version")]

    def __str__(self) -> str:
        return f"{self.sku} v{self.version} {self.kind} {self.on_hand_delta:+d}/{self.reserved_delta:+d}"


class StockSnapshot(models.Model):
    """A product's stock as the ledger folds to at ``version``, taken every
    ``ledger.SNAPSHOT_EVERY`` versions: a fold starts from the last one, not the first entry."""

    sku = models.CharField(max_length=64)
    version = models.PositiveBigIntegerField()
    on_hand = models.IntegerField()
    reserved = models.IntegerField()
    taken_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["sku", "-version"]
        constraints = [models.UniqueConstraint(fields=["sku", "version"], name="inventory_stock_snapshot_version")]

    def __str__(self) -> str:
        return f"{self.sku} at v{self.version}: {self.on_hand} on hand, {self.reserved} reserved"


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
