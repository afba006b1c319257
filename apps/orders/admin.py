from django.contrib import admin, messages
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone
from django.utils.html import format_html

from waybill.api import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin

from . import saga as sagas
from .models import (
    CircuitState,
    DeadLetter,
    InboxMessage,
    Order,
    OrderLine,
    OrderSaga,
    OutboxMessage,
    PaymentDeadLetter,
    PaymentInboxMessage,
    ProductCopy,
    SagaStep,
)


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


class SagaStepInline(admin.TabularInline):
    model = SagaStep
    extra = 0
    can_delete = False
    fields = readonly_fields = ("at", "step", "event", "reason", "sent")
    verbose_name_plural = "timeline"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="message sent")
    def sent(self, step):
        if not step.message_id:
            return "-"
        return format_html('<a href="/admin/orders/outboxmessage/?q={}">{}</a>', step.message_id, step.message_type)


@admin.register(OrderSaga)
class OrderSagaAdmin(ReadOnlyAdmin):
    """Open sagas first, the longest stuck at the top; each with its timeline."""

    list_display = ("order_id", "state", "step", "attempts", "deadline_at", "overdue", "stuck_for", "last_error")
    list_filter = ("state", "step")
    search_fields = ("order_id", "outcome_reason", "last_error")
    fields = ("order_id", "state", "step", "deadline_at", "attempts", "outcome_reason", "last_error",
              "version", "started_at", "updated_at")
    inlines = [SagaStepInline]
    actions = ("compensate_now",)

    def get_queryset(self, request):
        finished = Case(When(state__in=OrderSaga.TERMINAL, then=Value(1)), default=Value(0),
                        output_field=IntegerField())
        return super().get_queryset(request).annotate(finished=finished).order_by("finished", "updated_at")

    @admin.display(boolean=True)
    def overdue(self, saga):
        return saga.deadline_at is not None and saga.deadline_at < timezone.now()

    @admin.display(description="unchanged for")
    def stuck_for(self, saga):
        return "-" if saga.is_terminal else timezone.now() - saga.updated_at

    @admin.action(description="Compensate now (bring the deadline forward)", permissions=["operate"])
    def compensate_now(self, request, queryset):
        count = sagas.saga_deadline_bring_forward(order_ids=list(queryset.values_list("order_id", flat=True)))
        self.message_user(request, f"{count} sagas will compensate at the next sweep (about a second).",
                          messages.SUCCESS)


@admin.register(CircuitState)
class CircuitStateAdmin(ReadOnlyAdmin):
    """The payment provider's circuit breaker: open means charges fail fast and wait."""

    list_display = ("name", "state", "failures", "changed_at", "process")


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
admin.site.register(PaymentInboxMessage, InboxAdmin)
admin.site.register(PaymentDeadLetter, DeadLetterAdmin)
