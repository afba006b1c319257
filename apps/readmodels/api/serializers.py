"""Output shapes of the read API: the same documents the change log pushes
(documents.py), described here for the OpenAPI schema."""

from rest_framework import serializers

STEPS = ("placed", "stock_reserved", "stock_rejected", "payment_charged", "payment_declined", "confirmed",
         "rejected", "cancelled", "stock_released", "payment_refunded")


class SummaryLineOutput(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2, help_text="Price when ordered.")
    available = serializers.IntegerField(allow_null=True, help_text="The product's availability now "
                                         "(null if inventory has not told us about it).")
    product_version = serializers.IntegerField(allow_null=True, help_text="The product's version that "
                                               "`available` is from; the catalog stream carries later ones.")


class TimelineStepOutput(serializers.Serializer):
    step = serializers.ChoiceField(choices=STEPS)
    status = serializers.ChoiceField(choices=("ok", "failed", "skipped"), help_text="How the step went.")
    at = serializers.DateTimeField(help_text="When it happened (the message's occurred_at).")
    reason = serializers.CharField(allow_blank=True)


class OrderSummaryOutput(serializers.Serializer):
    """The order document: the order joined with its products' availability, and every
    step it went through."""

    id = serializers.UUIDField()
    status = serializers.CharField(help_text="PENDING, CONFIRMED, REJECTED or CANCELLED.")
    reason = serializers.CharField(allow_blank=True)
    lines = SummaryLineOutput(many=True)
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField(allow_null=True, help_text="ISO 4217, of the total and every line's unit "
                                     "price; null until orders' first event about the order arrived.")
    version = serializers.IntegerField(help_text="This document's version: grows with every change of it.")
    order_version = serializers.IntegerField(help_text="The order's version on the write side (its ETag, for "
                                             "If-Match).")
    placed_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()
    timeline = TimelineStepOutput(many=True, help_text="Oldest first.")


class CatalogItemOutput(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.DecimalField(max_digits=10, decimal_places=2)
    available = serializers.IntegerField()
    version = serializers.IntegerField()


class StockItemOutput(CatalogItemOutput):
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()


class OutboxReportOutput(serializers.Serializer):
    context = serializers.CharField()
    pending = serializers.IntegerField()
    oldest_pending_age_s = serializers.FloatField(allow_null=True)
    parked = serializers.IntegerField(help_text="Rows that failed to publish too often; an operator republishes them.")
    dead_letters = serializers.IntegerField()
    measured_at = serializers.DateTimeField()


class ThroughputOutput(serializers.Serializer):
    minute = serializers.DateTimeField()
    placed = serializers.IntegerField()
    confirmed = serializers.IntegerField()
    rejected = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class CrashingProcessOutput(serializers.Serializer):
    name = serializers.CharField()
    context = serializers.CharField()
    state = serializers.CharField(help_text="BACKOFF: failing to start, retried with backoff; FATAL: given up on; "
                                            "CRASH_LOOP: crashes again and again, restarted each time.")
    measured_at = serializers.DateTimeField()


class DashboardOutput(serializers.Serializer):
    version = serializers.IntegerField()
    orders_by_status = serializers.DictField(child=serializers.IntegerField())
    outboxes = OutboxReportOutput(many=True, help_text="Each context's last outbox report.")
    crashing_processes = CrashingProcessOutput(
        many=True, help_text="Processes that keep crashing, as each context's supervisor last reported them.")
    throughput = ThroughputOutput(many=True, help_text="Per minute, the last 15 minutes, oldest first.")


class OrderPageOutput(serializers.Serializer):
    order = OrderSummaryOutput()
    products = CatalogItemOutput(many=True, help_text="The order's products as the catalog shows them now.")


class ShopPageOutput(serializers.Serializer):
    catalog = CatalogItemOutput(many=True)
    recent_orders = OrderSummaryOutput(many=True, help_text="Your last 10 orders, most recently changed first.")


class SalesQuery(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=90, default=14,
                                    help_text="How many days back, today (UTC) included.")


class SalesDayOutput(serializers.Serializer):
    day = serializers.DateField()
    sku = serializers.CharField()
    quantity = serializers.IntegerField(help_text="Units sold: lines of orders confirmed that day and not cancelled.")
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()
