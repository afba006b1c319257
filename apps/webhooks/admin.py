"""What operators see of webhooks, and the one thing they may do: redeliver.

The endpoints' secrets never show here. Redelivering takes the "operate" permission
(the model's change permission, as every messaging action: ``waybill.admin.ReadOnlyAdmin``)."""

from django.contrib import admin, messages

from waybill.api import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin

from . import services
from .models import DeadLetter, InboxMessage, OutboxMessage, WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "owner_id", "url", "event_types", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "owner_id")
    exclude = ("secret",)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("started_at", "status_code", "response_ms", "succeeded", "error", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "event_type", "endpoint_url", "status", "attempts", "last_status_code",
                    "last_response_ms", "last_error", "next_attempt_at", "delivered_at", "redeliveries")
    list_filter = ("status", "event_type")
    search_fields = ("id", "message_id", "endpoint__url", "last_error")
    list_select_related = ("endpoint",)
    exclude = ("claim",)
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver",)

    @admin.display(description="endpoint")
    def endpoint_url(self, row):
        return row.endpoint.url

    @admin.action(description="Redeliver now (a fresh set of tries)", permissions=["operate"])
    def redeliver(self, request, queryset):
        count = services.webhook_deliveries_redeliver(
            delivery_ids=list(queryset.values_list("id", flat=True)), by=request.user.get_username())
        skipped = queryset.count() - count
        self.message_user(request, f"{count} deliveries will be sent again now; {skipped} skipped "
                                   "(endpoint deleted, or the event not expressible in its version).",
                          messages.SUCCESS)


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
