from django.contrib import admin

from waybill.api import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin, RebuildAdmin

from .models import (
    CatalogItem, Change, Dashboard, DashboardDelta, DeadLetter, InboxMessage, OrderStatusCount, OrderSummary,
    OrderThroughput, OutboxGauge, OutboxMessage, ProcessGauge, Rebuild, ReplayPosition, Stream,
)


# Read models are projections: rebuilt from messages, never edited by hand.


@admin.register(OrderSummary)
class OrderSummaryAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "customer_id", "status", "total", "order_version", "version", "placed_at",
                    "updated_at")
    list_filter = ("status",)
    search_fields = ("order_id", "customer_id")


@admin.register(CatalogItem)
class CatalogItemAdmin(ReadOnlyAdmin):
    list_display = ("sku", "name", "price", "on_hand", "reserved", "available", "version", "updated_at")
    search_fields = ("sku", "name")


@admin.register(Stream)
class StreamAdmin(ReadOnlyAdmin):
    list_display = ("name", "position")
    search_fields = ("name",)


@admin.register(Change)
class ChangeAdmin(ReadOnlyAdmin):
    list_display = ("stream", "position", "kind", "key", "version", "recorded_at")
    list_filter = ("kind",)
    search_fields = ("stream", "key")
    ordering = ("-id",)


@admin.register(OrderStatusCount)
class OrderStatusCountAdmin(ReadOnlyAdmin):
    list_display = ("status", "count")


@admin.register(OrderThroughput)
class OrderThroughputAdmin(ReadOnlyAdmin):
    list_display = ("minute", "placed", "confirmed", "rejected", "cancelled")


@admin.register(DashboardDelta)
class DashboardDeltaAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "delta", "event", "minute")


@admin.register(OutboxGauge)
class OutboxGaugeAdmin(ReadOnlyAdmin):
    list_display = ("context", "pending", "oldest_pending_age_s", "parked", "dead_letters", "measured_at")


@admin.register(ProcessGauge)
class ProcessGaugeAdmin(ReadOnlyAdmin):
    list_display = ("context", "crashing", "measured_at")


@admin.register(Dashboard)
class DashboardAdmin(ReadOnlyAdmin):
    list_display = ("key", "version", "dirty", "built_at")


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
admin.site.register(Rebuild, RebuildAdmin)


@admin.register(ReplayPosition)
class ReplayPositionAdmin(ReadOnlyAdmin):
    """Where a rewind of this consumer has come to (a rebuild's is in its green tables)."""

    list_display = ("name", "applied", "refused", "updated_at", "position")
