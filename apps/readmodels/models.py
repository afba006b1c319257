"""Query models, built only from messages. Each row carries the version of the aggregate
it mirrors, so an older message never moves it backwards."""

from django.db import models

from waybill.models import DeadLetterBase, InboxMessageBase, OutboxMessageBase, RebuildBase, ReplayPositionBase


class OrderSummary(models.Model):
    """The order document: one row per order, joined from orders' snapshots, the payment
    outcomes and inventory's stock answers, so a reader gets the whole story of an order
    (lines, status, every step with its time and reason) without asking anyone.

    Two versions: ``order_version`` is orders' aggregate version of the snapshot shown
    (the write side's ETag, what ``If-Match`` wants); ``version`` is this document's own,
    bumped by every applied message, so a client can tell a newer document from an older
    one even when only the timeline moved. A row can exist before orders' first message
    (inventory answered first): ``customer_id`` is then unknown and nobody sees it yet."""

    order_id = models.UUIDField(primary_key=True)
    customer_id = models.BigIntegerField(db_index=True, null=True)
    status = models.CharField(max_length=16, blank=True)
    reason = models.TextField(blank=True)
    lines = models.JSONField(default=list)  # [{sku, name, quantity, unit_price}], as ordered
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    currency = models.CharField(max_length=3, blank=True)  # ISO 4217, of the total and the lines' prices
    order_version = models.PositiveBigIntegerField(default=0)
    version = models.PositiveBigIntegerField(default=0)
    placed_at = models.DateTimeField(null=True, blank=True)
    # [{step, status, at, reason, message_id}] sorted by (at, step, message_id): the same
    # order whatever order the messages arrived in.
    timeline = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name = "order document"
        indexes = [models.Index(fields=["customer_id", "-updated_at"], name="readmodels_order_customer")]

    def __str__(self) -> str:
        return f"{self.order_id} {self.status or '(not placed yet)'} v{self.version}"


class CatalogItem(models.Model):
    """A product as inventory last told us (its whole state document): the catalog shows
    name, price and availability; the staff stock board also on hand and reserved."""

    sku = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)
    available = models.PositiveIntegerField()
    version = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} ({self.available} available)"


class SaleLine(models.Model):
    """Sales per product per day: one row per line of each order, as orders' newest snapshot
    of it says. A line counts as sold (``sold``) while its order is CONFIRMED, on the day
    of its confirmation; a cancellation takes it out again. Kept per order and version, not
    as counters, so that any arrival order and any repeat give the same rows (a projection
    added after the fact, filled from the event history: ``manage.py rebuild --projection
    sales``). The figures per day are sums over these rows (``selectors.sales_by_day``)."""

    order_id = models.UUIDField()
    sku = models.CharField(max_length=64)
    order_version = models.PositiveBigIntegerField()
    sold = models.BooleanField(default=False)
    day = models.DateField(null=True, blank=True)  # of the confirmation, while sold
    quantity = models.PositiveIntegerField()
    revenue = models.DecimalField(max_digits=12, decimal_places=2)  # quantity x unit price
    currency = models.CharField(max_length=3)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order_id", "sku"], name="readmodels_sale_line")]
        indexes = [models.Index(fields=["day", "sku"], name="readmodels_sale_day", condition=models.Q(sold=True))]

    def __str__(self) -> str:
        return f"{self.sku} x{self.quantity} ({'sold ' + str(self.day) if self.sold else 'not sold'})"


class OrderStatusCount(models.Model):
    """How many orders are in each status: the dashboard's totals, folded from
    ``DashboardDelta`` rows (see services.dashboard_publish)."""

    status = models.CharField(max_length=16, primary_key=True)
    count = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.status}: {self.count}"


class OrderThroughput(models.Model):
    """Order outcomes per minute (of the messages' occurred_at)."""

    minute = models.DateTimeField(primary_key=True)
    placed = models.PositiveIntegerField(default=0)
    confirmed = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-minute"]
        verbose_name_plural = "order throughput"

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M}"


class DashboardDelta(models.Model):
    """A counter increment recorded by an order projection, in its transaction.

    Insert-only, so projections of different orders never wait on one hot counter row;
    the dashboard job folds them into the totals at most once a second, and their mere
    presence says the dashboard changed."""

    status = models.CharField(max_length=16, blank=True)  # orders per status: +1 / -1
    delta = models.IntegerField(default=0)
    event = models.CharField(max_length=16, blank=True)  # throughput: placed, confirmed, ...
    minute = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.status} {self.delta:+d}" if self.status else f"{self.event} @{self.minute}"


class Gauge(models.Model):
    """What one context last reported of itself (an operations report on the bus, see
    waybill.opsreport): readmodels never reads another context's database."""

    context = models.CharField(max_length=64, primary_key=True)
    measured_at = models.DateTimeField()
    version = models.PositiveBigIntegerField()  # the report's aggregate version (ms)

    class Meta:
        abstract = True
        ordering = ["context"]


class OutboxGauge(Gauge):
    """A context's outbox and dead letters as it last reported them (waybill.outbox_measured)."""

    pending = models.PositiveIntegerField()
    oldest_pending_age_s = models.FloatField(null=True, blank=True)
    parked = models.PositiveIntegerField()
    dead_letters = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.context}: {self.pending} pending"


class ProcessGauge(Gauge):
    """A context's processes that its supervisor reported as crashing, as the context last
    reported them (waybill.processes_supervised): name -> BACKOFF or FATAL, {} when all run."""

    crashing = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"{self.context}: {', '.join(self.crashing) or 'all running'}"


class Dashboard(models.Model):
    """The operations dashboard's own row: its document version, when it was last built,
    and whether a gauge changed since (counters say so by their deltas)."""

    key = models.CharField(max_length=16, primary_key=True, default="dashboard")
    version = models.PositiveBigIntegerField(default=0)
    dirty = models.BooleanField(default=False)
    built_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"dashboard v{self.version}"


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


class ReplayPosition(ReplayPositionBase):
    pass


class Rebuild(RebuildBase):
    pass
