from django.contrib import admin

from waybill.admin import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin

from .models import DeadLetter, InboxMessage, Order, OrderLine, OutboxMessage, ProductCopy


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    readonly_fields = ("sku", "name", "quantity", "unit_price")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer_id", "status", "total", "version", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("id", "customer_id", "reason")
    inlines = [OrderLineInline]


@admin.register(ProductCopy)
class ProductCopyAdmin(ReadOnlyAdmin):
    list_display = ("sku", "name", "price", "version")
    search_fields = ("sku", "name")


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
