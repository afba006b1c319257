"""Admin for the messaging tables. Each context registers its own concrete tables with
these classes; actions go through ``operations``.

A message body is never rendered whole: pages show a bounded preview
(``WAYBILL_MESSAGE_PREVIEW_BYTES``) and offer the exact body as a download to staff who may
view the row, so a 5 MB dead letter's page stays a few KB, and lists never load bodies."""

import json
import logging

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import contexts, operations, rights
from .wire import preview

log = logging.getLogger(__name__)


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
    takes the model's change permission or the console's operate right; viewing alone does not."""

    def has_operate_permission(self, request) -> bool:
        # The console's operate right is the right to act on every messaging table.
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}") or rights.may_operate(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MessageBodyAdmin(ReadOnlyAdmin):
    """A messaging table whose rows carry a body (``body_field``): shown as a preview with
    a download link, deferred in lists."""

    body_field = "envelope"

    def body_of(self, row) -> bytes:
        return json.dumps(getattr(row, self.body_field), indent=2).encode()

    def preview_of(self, row) -> str:
        return preview(self.body_of(row), settings.WAYBILL_MESSAGE_PREVIEW_BYTES)

    def get_queryset(self, request):
        return super().get_queryset(request).defer(self.body_field)

    def get_exclude(self, request, obj=None):
        return (*(super().get_exclude(request, obj) or ()), self.body_field)

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "body_preview")

    @admin.display(description="message")
    def body_preview(self, row):
        opts = self.opts
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_body", args=[row.pk])
        return format_html('<pre style="white-space: pre-wrap">{}</pre><a href="{}">Download the whole message</a>',
                           self.preview_of(row), url)

    def get_urls(self):
        opts = self.opts
        return [
            path("<path:object_id>/body/", self.admin_site.admin_view(self.body_download),
                 name=f"{opts.app_label}_{opts.model_name}_body"),
            *super().get_urls(),
        ]

    def body_download(self, request, object_id):
        row = self.get_object(request, unquote(object_id))
        if row is None:
            raise Http404
        if not self.has_view_permission(request, row):
            raise PermissionDenied
        response = HttpResponse(self.body_of(row), content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{self.opts.model_name}-{row.pk}.bin"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


def _flow(term) -> str:
    from .console_admin import flow_link

    return flow_link(term) if term else "-"


class OutboxAdmin(MessageBodyAdmin):
    list_display = ("id", "message_type", "aggregate_id", "aggregate_version", "created_at",
                    "sent_at", "age", "publish_attempts", "skipped_at", "flow")
    list_filter = (PendingFilter, "message_type")
    search_fields = ("message_id", "aggregate_id", "message_type")
    actions = ("republish",)
    ordering = ("-id",)

    @admin.display(description="age (pending)")
    def age(self, row):
        if row.sent_at is not None:
            return "-"
        return timezone.now() - row.created_at

    @admin.display(description="flow")
    def flow(self, row):
        return _flow(row.message_id)

    @admin.action(description="Publish again (consumers drop what they already applied)",
                  permissions=["operate"])
    def republish(self, request, queryset):
        name = contexts.for_model(self.model).name
        rows = list(queryset)
        count = operations.outbox_republish(context_name=name, row_ids=[row.id for row in rows])
        rights.audit_record(request.user, rows, action="republish")
        self.message_user(request, f"{count} messages queued for publishing.", messages.SUCCESS)


class InboxAdmin(MessageBodyAdmin):
    list_display = ("message_type", "message_id", "status", "attempts", "received_at",
                    "processed_at", "processed_by", "next_attempt_at", "last_error", "flow")
    list_filter = ("status", "message_type")
    search_fields = ("message_id", "message_type", "last_error")
    actions = ("retry_now",)

    @admin.display(description="flow")
    def flow(self, row):
        return _flow(row.message_id)

    @admin.action(description="Retry now", permissions=["operate"])
    def retry_now(self, request, queryset):
        name = contexts.for_model(self.model).name
        rows = list(queryset.defer("envelope"))
        count = operations.inbox_retry_now(context_name=name, row_ids=[row.id for row in rows])
        rights.audit_record(request.user, rows, action="retry now")
        self.message_user(request, f"{count} retries brought forward.", messages.SUCCESS)


class DeadLetterAdmin(MessageBodyAdmin):
    list_display = ("created_at", "message_type", "reason_kind", "reason", "attempts", "body_size", "content_type",
                    "routing_key", "replayed_at", "discarded_at", "cause", "flow")
    list_filter = ("reason_kind", "message_type", ("replayed_at", admin.EmptyFieldListFilter),
                   ("discarded_at", admin.EmptyFieldListFilter))
    search_fields = ("message_id", "message_type", "reason", "preview")
    body_field = "body"

    def body_of(self, row) -> bytes:
        return bytes(row.body)  # exactly as it arrived

    def preview_of(self, row) -> str:
        return row.preview  # bounded when it was stored

    def get_queryset(self, request):
        # The envelope is as large as the body, and a list shows neither.
        return super().get_queryset(request).defer("envelope")

    def get_exclude(self, request, obj=None):
        return (*super().get_exclude(request, obj), "preview", "envelope")
    actions = ("replay",)
    ordering = (F("created_at").desc(),)

    @admin.display(description="cause")
    def cause(self, row):
        from .console_admin import letter_url

        return format_html('<a href="{}">cause chain</a>', letter_url(contexts.for_model(self.model).name, row.pk))

    @admin.display(description="flow")
    def flow(self, row):
        return _flow(row.message_id)

    @admin.action(description="Replay (fresh tries through the inbox)", permissions=["operate"])
    def replay(self, request, queryset):
        from . import console
        from .console_admin import redrive_summary

        ctx = contexts.for_model(self.model)
        letters = console.in_redrive_order(console.as_dead_letter_rows(
            ctx, queryset.defer(None).defer("body", "preview", "traceback").order_by("created_at")))
        # As the console does: a message behind a later one of its aggregate is left out here;
        # its group's page in the console can include it.
        flagged = console.out_of_order(letters)
        chosen = [letter for letter in letters if (letter.consumer, letter.id) not in flagged]
        outcomes = operations.dead_letters_redrive(letters=console.dead_letter_rows(chosen), by=request.user)
        self.message_user(request, redrive_summary(outcomes, left_out=len(flagged)), messages.INFO)


class RebuildAdmin(ReadOnlyAdmin):
    """Blue/green rebuilds of the context's projections (``waybill.rebuild``): how far each
    is, while the page refreshes itself; and, for who may act, buttons that start one in a
    process of its own (or resume the unfinished one)."""

    list_display = ("id", "projections", "status", "progress", "rate", "eta", "started_at", "switched_at",
                    "running_on", "replaced", "error")
    list_filter = ("status",)
    change_list_template = "waybill/admin/rebuild_change_list.html"

    @admin.display(description="progress")
    def progress(self, row):
        if not row.total:
            return f"{row.done:,} events"
        return format_html('<progress max="{}" value="{}"></progress> {} / {} ({}%)', row.total, row.done,
                           f"{row.done:,}", f"{row.total:,}", min(100, round(100 * row.done / row.total)))

    @admin.display(description="events/s")
    def rate(self, row):
        return f"{row.events_per_s:,.0f}" if row.events_per_s else "-"

    @admin.display(description="ETA")
    def eta(self, row):
        seconds = row.eta_seconds
        return "-" if seconds is None else f"{seconds:,.0f} s"

    def _start_url_name(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_start"

    def get_urls(self):
        return [path("start/", self.admin_site.admin_view(self.start), name=self._start_url_name()),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        from . import rebuild

        context = contexts.for_model(self.model)
        return super().changelist_view(request, {
            **(extra_context or {}),
            "projections": sorted(context.projections),
            "may_start": self.has_operate_permission(request),
            "start_url": f"admin:{self._start_url_name()}",
            "running": rebuild.running(context) is not None,
        })

    def start(self, request):
        from . import rebuild

        if request.method != "POST" or not self.has_operate_permission(request):
            raise PermissionDenied
        context = contexts.for_model(self.model)
        name = request.POST.get("projection") or None
        if name is not None and name not in context.projections:
            raise Http404(f"no projection {name!r}")
        changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        if (busy := rebuild.running(context)) is not None:
            self.message_user(request, f"Rebuild {busy.pk} is running on {busy.running_on}: one at a time.",
                              messages.WARNING)
            return HttpResponseRedirect(changelist)
        process = rebuild.start_detached(context, [name] if name else None)
        log.info("%s started a rebuild of %s of %s (process %d)", request.user, name or "every projection",
                 context.name, process.pid)
        self.message_user(request, f"Rebuild of {name or 'every projection'} started (process {process.pid}); "
                                   "it resumes an unfinished one of the same projections.", messages.SUCCESS)
        return HttpResponseRedirect(changelist)


from . import console_admin  # noqa: E402, F401 - registers the operations console with the admin
