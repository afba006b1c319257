import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from waybill.models import DeadLetterBase, InboxMessageBase, OutboxMessageBase


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
    # ISO 4217, of the total and every line's price: the shop's currency when it was placed.
    currency = models.CharField(max_length=3, default="EUR")
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


class OrderSaga(models.Model):
    """The order's long-running process: reserve stock -> charge payment -> confirm, and
    in reverse when a step fails or misses its deadline. One per order; ``version`` grows
    with every change, and every change happens under a row lock, so two messages for one
    saga never interleave."""

    class State(models.TextChoices):
        RUNNING = "running"
        COMPENSATING = "compensating"
        COMPLETED = "completed"
        COMPENSATED = "compensated"

    class Step(models.TextChoices):
        RESERVE_STOCK = "reserve_stock"
        CHARGE_PAYMENT = "charge_payment"
        RELEASE_STOCK = "release_stock"  # compensation
        DONE = "done"

    TERMINAL = (State.COMPLETED, State.COMPENSATED)

    order_id = models.UUIDField(primary_key=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    step = models.CharField(max_length=32, choices=Step.choices)
    # Database time, so a restart of any process or a skewed clock cannot move it.
    deadline_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=1, help_text="Tries of the current step.")
    # Why the order will be rejected, once the compensation has run.
    outcome_reason = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    version = models.PositiveBigIntegerField(default=1)
    started_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["updated_at"]
        indexes = [models.Index(fields=["state", "deadline_at"], name="orders_saga_due")]

    def __str__(self) -> str:
        return f"saga {self.order_id} ({self.state}, {self.step})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL


class SagaClock(models.Model):
    """When orders last swept its sagas' deadlines (one row). Saga time runs only while
    orders is there to sweep: a gap between sweeps longer than
    ``WAYBILL_SAGA_CLOCK_GAP_SECONDS`` is time the sweeper could not run (a broker outage
    disconnects every orders consumer; a stopped or restarting deployment runs nothing),
    and every open deadline moves on by it. So an infrastructure outage is never taken for
    a business failure, while time the platform spends running still counts."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    ticked_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"saga clock, last swept {self.ticked_at}"


class SagaStep(models.Model):
    """The saga's timeline: what each step did, when and why, and the message it sent."""

    class Event(models.TextChoices):
        STARTED = "started"
        FINISHED = "finished"
        FAILED = "failed"
        TIMED_OUT = "timed_out"
        COMPENSATED = "compensated"

    saga = models.ForeignKey(OrderSaga, related_name="timeline", on_delete=models.CASCADE)
    step = models.CharField(max_length=32)
    event = models.CharField(max_length=16, choices=Event.choices)
    at = models.DateTimeField(db_default=Now())
    reason = models.TextField(blank=True)
    message_id = models.UUIDField(null=True, blank=True)
    message_type = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["id"]


class CircuitState(models.Model):
    """The payment provider's circuit breaker as last seen by any process, for operators."""

    name = models.CharField(max_length=64, primary_key=True)
    state = models.CharField(max_length=16)
    failures = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(db_default=Now())
    process = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "circuit breaker"


class OutboxMessage(OutboxMessageBase):
    pass


class InboxMessage(InboxMessageBase):
    pass


class DeadLetter(DeadLetterBase):
    pass


class PaymentInboxMessage(InboxMessageBase):
    """The payments consumer's own inbox: it is a bulkhead with its own queue."""


class PaymentDeadLetter(DeadLetterBase):
    pass
