"""Admin for the messaging tables. Each context registers its own concrete tables with
these classes; actions go through ``operations``."""

from django.contrib import admin, messages
from django.db.models import F
from django.utils import timezone

from . import contexts, operations


class PendingFilter(admin.SimpleListFilter):
    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request, model_admin):
        return [("pending", "pending"), ("sent", "sent")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(sent_at__isnull=True)
        if self.value() == "sent":
            return queryset.filter(sent_at__isnull=False)
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Messages are facts: operators act on them, never edit them. Acting (the actions)
    takes the model's change permission; viewing alone does not."""

    def has_operate_permission(self, request) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OutboxAdmin(ReadOnlyAdmin):
    list_display = ("id", "message_type", "aggregate_id", "aggregate_version", "created_at",
                    "sent_at", "age", "publish_attempts")
    list_filter = (PendingFilter, "message_type")
    search_fields = ("message_id", "aggregate_id", "message_type")
    actions = ("republish",)
    ordering = ("-id",)

    @admin.display(description="age (pending)")
    def age(self, row):
        if row.sent_at is not None:
            return "-"
        return timezone.now() - row.created_at

    @admin.action(description="Publish again (consumers drop what they already applied)",
                  permissions=["operate"])
    def republish(self, request, queryset):
        name = contexts.for_model(self.model).name
        count = operations.outbox_republish(context_name=name, row_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{count} messages queued for publishing.", messages.SUCCESS)


class InboxAdmin(ReadOnlyAdmin):
    list_display = ("message_type", "message_id", "status", "attempts", "received_at",
                    "processed_at", "processed_by", "next_attempt_at", "last_error")
    list_filter = ("status", "message_type")
    search_fields = ("message_id", "message_type", "last_error")
    actions = ("retry_now",)

    @admin.action(description="Retry now", permissions=["operate"])
    def retry_now(self, request, queryset):
        name = contexts.for_model(self.model).name
        count = operations.inbox_retry_now(context_name=name, row_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{count} retries brought forward.", messages.SUCCESS)


class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "message_type", "reason", "attempts", "routing_key", "replayed_at")
    list_filter = ("message_type", ("replayed_at", admin.EmptyFieldListFilter))
    search_fields = ("message_id", "message_type", "reason", "body")
    actions = ("replay",)
    ordering = (F("created_at").desc(),)

    @admin.action(description="Replay (fresh tries through the inbox)", permissions=["operate"])
    def replay(self, request, queryset):
        replayed = sum(operations.dead_letter_replay(dead_letter=letter) for letter in queryset)
        skipped = queryset.count() - replayed
        self.message_user(request, f"{replayed} replayed; {skipped} skipped (no readable envelope, replayed "
                                   "before, or already applied).", messages.INFO)
