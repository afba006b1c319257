from django.contrib import admin

from waybill.admin import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin

from .webhooks import admin as webhooks_admin  # noqa: F401  (registers the webhook pages)
from .models import CatalogItem, DeadLetter, InboxMessage, OrderSummary, OutboxMessage


@admin.register(OrderSummary)
class OrderSummaryAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "customer_id", "status", "total", "version", "updated_at")
    list_filter = ("status",)
    search_fields = ("order_id", "customer_id")


@admin.register(CatalogItem)
class CatalogItemAdmin(ReadOnlyAdmin):
    list_display = ("sku", "name", "price", "available", "version", "updated_at")
    search_fields = ("sku", "name")


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
