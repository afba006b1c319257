"""What operators see of webhooks, and the one thing they may do: redeliver.

The endpoints' secrets never show here. Redelivering takes the "operate" permission
(the model's change permission, as every messaging action: ``waybill.admin.ReadOnlyAdmin``)."""

from django.contrib import admin, messages
from django.urls import reverse

from waybill.api import (
    FlowNote,
    DeadLetterAdmin,
    InboxAdmin,
    OutboxAdmin,
    ReadOnlyAdmin,
    audit_record,
    flow_link,
    flow_notes,
)

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
                    "last_response_ms", "last_error", "next_attempt_at", "delivered_at", "redeliveries", "flow")
    list_filter = ("status", "event_type")
    search_fields = ("id", "message_id", "endpoint__url", "last_error")
    list_select_related = ("endpoint",)
    exclude = ("claim",)
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver",)

    @admin.display(description="endpoint")
    def endpoint_url(self, row):
        return row.endpoint.url

    @admin.display(description="flow")
    def flow(self, row):
        return flow_link(row.message_id, "its event's flow")

    @admin.action(description="Redeliver now (a fresh set of tries)", permissions=["operate"])
    def redeliver(self, request, queryset):
        chosen = list(queryset)
        count = services.webhook_deliveries_redeliver(
            delivery_ids=[delivery.id for delivery in chosen], by=request.user.get_username())
        audit_record(request.user, chosen, action="redeliver")
        skipped = queryset.count() - count
        self.message_user(request, f"{count} deliveries will be sent again now; {skipped} skipped "
                                   "(endpoint deleted, or the event not expressible in its version).",
                          messages.SUCCESS)


@flow_notes("webhooks")
def deliveries_in_flow(message_ids):
    """Each endpoint's delivery of an event of the flow."""
    deliveries = WebhookDelivery.objects.filter(message_id__in=message_ids).select_related("endpoint")
    for delivery in deliveries.order_by("created_at"):
        yield FlowNote(
            message_id=delivery.message_id, context="webhooks", what=f"delivery to {delivery.endpoint.url}",
            status=delivery.status, attempts=delivery.attempts, at=delivery.delivered_at or delivery.created_at,
            error=delivery.last_error, url=reverse("admin:webhooks_webhookdelivery_change", args=[delivery.id]))


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
