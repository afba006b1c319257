from django.contrib import admin

from waybill.api import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin

from .models import DeadLetter, InboxMessage, OutboxMessage, Product, Reservation, StockEntry, StockSnapshot


@admin.register(Product)
class ProductAdmin(ReadOnlyAdmin):
    """Read-only here: stock changes go through the staff API so they are published."""

    list_display = ("sku", "name", "price", "on_hand", "reserved", "available", "version", "updated_at")
    search_fields = ("sku", "name")


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "status", "reason", "version", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("order_id", "reason")


@admin.register(StockEntry)
class StockEntryAdmin(ReadOnlyAdmin):
    """The stock ledger: appended by the services, never edited."""

    list_display = ("sku", "version", "kind", "on_hand_delta", "reserved_delta", "order_id", "recorded_at")
    list_filter = ("kind",)
    search_fields = ("=sku", "=order_id")


@admin.register(StockSnapshot)
class StockSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("sku", "version", "on_hand", "reserved", "taken_at")
    search_fields = ("=sku",)


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
