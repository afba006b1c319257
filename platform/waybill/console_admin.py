"""The operations console, in the Django admin: one flow across every context, dead letters
grouped by cause with redrive and discard, each outbox's health and the keys it holds back
with republish and skip, and each consumer's queue and inbox (``waybill.console`` reads
them; ``waybill.operations`` acts).

Looking takes ``waybill.view_console`` and acting ``waybill.operate_console``
(``waybill.rights``: the operators and operations leads groups); every act is recorded in
the admin's history with who, when and why. Acts are POSTs behind Django's CSRF check.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from . import console, contexts, operations, rights
from .models import Console


def redrive_summary(outcomes: dict[operations.Redrive, int], *, left_out: int = 0) -> str:
    Redrive = operations.Redrive
    parts = [f"{outcomes[Redrive.REDRIVEN]} dead letters redriven through their consumers' inboxes"]
    if outcomes[Redrive.ALREADY_HANDLED]:
        parts.append(f"{outcomes[Redrive.ALREADY_HANDLED]} closed: their consumer had applied them meanwhile")
    if outcomes[Redrive.NOT_REDRIVABLE]:
        parts.append(f"{outcomes[Redrive.NOT_REDRIVABLE]} not redrivable (no readable envelope, or redriven "
                     "or discarded before)")
    if left_out:
        parts.append(f"{left_out} left out: a later message of their aggregate was applied (include them "
                     "from the console's group page)")
    return "; ".join(parts) + "."


def flow_url(term: object) -> str:
    return f"{reverse('admin:waybill_console_flow')}?{urlencode({'q': str(term)})}"


def letter_url(consumer: str, letter_id: int) -> str:
    return reverse("admin:waybill_console_letter", args=[consumer, letter_id])


def flow_link(term: object, text: str = "flow") -> str:
    """A link to the flow of ``term`` (an order, a message, a correlation or trace id), for
    any admin page."""
    return format_html('<a href="{}">{}</a>', flow_url(term), text)


@admin.register(Console)
class ConsoleAdmin(admin.ModelAdmin):
    """The console's pages hang off this table-less model: the admin's index lists it for
    whoever may look, and its URLs live under /admin/waybill/console/. (Not a
    ``waybill.admin.ReadOnlyAdmin``: that module registers this one, and the import would
    make a cycle.)"""

    def has_view_permission(self, request, obj=None):
        return rights.may_view(request.user)

    def has_module_permission(self, request):
        return rights.may_view(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("", view(self.overview), name="waybill_console_changelist"),
            path("flow/", view(self.flow), name="waybill_console_flow"),
            path("dead-letters/", view(self.groups), name="waybill_console_groups"),
            path("dead-letters/<str:fingerprint>/", view(self.group), name="waybill_console_group"),
            path("dead-letters/<str:fingerprint>/redrive/", view(self.redrive), name="waybill_console_redrive"),
            path("dead-letters/<str:fingerprint>/discard/", view(self.discard), name="waybill_console_discard"),
            path("dead-letter/<str:consumer>/<int:letter_id>/", view(self.letter), name="waybill_console_letter"),
            path("outbox/", view(self.outboxes), name="waybill_console_outbox"),
            path("outbox/<str:context_name>/<int:row_id>/republish/", view(self.republish),
                 name="waybill_console_republish"),
            path("outbox/<str:context_name>/<int:row_id>/skip/", view(self.skip), name="waybill_console_skip"),
            path("consumers/", view(self.consumers), name="waybill_console_consumers"),
        ]

    # --- pages ---------------------------------------------------------------------------
    def _page(self, request, template: str, title: str, **context):
        if not rights.may_view(request.user):
            raise PermissionDenied
        return TemplateResponse(request, f"waybill/console/{template}", {
            **self.admin_site.each_context(request), "title": title, "opts": self.model._meta,
            "may_operate": rights.may_operate(request.user),
            "is_nav_sidebar_enabled": False,  # wide tables: the page needs the width
            "console_links": [{"title": link.title, "url": reverse(link.url_name)} for link in console.console_links],
            **context,
        })

    def _acting(self, request) -> None:
        if request.method != "POST":
            raise Http404
        if not rights.may_operate(request.user):
            raise PermissionDenied

    def overview(self, request):
        groups = console.dead_letter_groups()
        outboxes = console.outbox_health()
        return self._page(request, "overview.html", "Operations console", groups=groups[:10],
                          dead_letters=sum(g.count for g in groups), outboxes=outboxes,
                          blocked=[key for health in outboxes for key in health.blocked])

    def flow(self, request):
        term = request.GET.get("q", "").strip()
        found = console.flow(term) if term else None
        trace_links = [(t, console.trace_url(t)) for t in found.trace_ids] if found else []
        return self._page(request, "flow.html", f"Flow of {term}" if term else "Trace a flow", term=term,
                          flow=found, trace_links=trace_links)

    def groups(self, request):
        return self._page(request, "groups.html", "Dead letters by cause", groups=console.dead_letter_groups())

    def group(self, request, fingerprint):
        group, letters = console.dead_letter_group(fingerprint)
        if group is None and not letters:
            self.message_user(request, "No open dead letters of that cause (redriven or discarded).",
                              messages.INFO)
            return HttpResponseRedirect(reverse("admin:waybill_console_groups"))
        flagged = console.out_of_order(letters)
        rows = [(letter, flagged.get((letter.consumer, letter.id))) for letter in letters]
        return self._page(request, "group.html", f"Dead letters: {group.reason_kind if group else ''}",
                          group=group, rows=rows, flagged=len(flagged), limit=console.GROUP_LETTERS_LIMIT)

    def letter(self, request, consumer, letter_id):
        found = console.dead_letter(consumer, letter_id)
        if found is None:
            raise Http404
        ctx, letter = found
        return self._page(request, "letter.html", f"Dead letter {letter_id} of {consumer}", consumer=consumer,
                          letter=letter, chain=console.cause_chain(letter.envelope), row_url=console.admin_url(letter),
                          envelope_id=(letter.envelope or {}).get("id"))

    def outboxes(self, request):
        outboxes = console.outbox_health()
        return self._page(request, "outbox.html", "Outboxes", outboxes=outboxes, rate_minutes=console.RATE_MINUTES,
                          blocked_keys=[key for health in outboxes for key in health.blocked],
                          max_attempts=settings.WAYBILL_RELAY_MAX_ATTEMPTS)

    def consumers(self, request):
        return self._page(request, "consumers.html", "Consumers", consumers=console.consumer_health(),
                          sample=console.LATENCY_SAMPLE)

    # --- acts ------------------------------------------------------------------------------
    def redrive(self, request, fingerprint):
        self._acting(request)
        letters = console.in_redrive_order(console.open_dead_letters(fingerprint))
        flagged = console.out_of_order(letters)
        chosen = letters if request.POST.get("include_out_of_order") else \
            [letter for letter in letters if (letter.consumer, letter.id) not in flagged]
        outcomes = operations.dead_letters_redrive(letters=console.dead_letter_rows(chosen), by=request.user,
                                                   reason=request.POST.get("reason", "").strip())
        self.message_user(request, redrive_summary(outcomes, left_out=len(letters) - len(chosen)),
                          messages.SUCCESS if outcomes[operations.Redrive.REDRIVEN] else messages.WARNING)
        return HttpResponseRedirect(reverse("admin:waybill_console_group", args=[fingerprint]))

    def discard(self, request, fingerprint):
        self._acting(request)
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, "A discard needs a reason: nothing was discarded.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:waybill_console_group", args=[fingerprint]))
        count = operations.dead_letters_discard(letters=self._rows(console.open_dead_letters(fingerprint)),
                                                by=request.user, reason=reason)
        self.message_user(request, f"{count} dead letters discarded.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:waybill_console_groups"))

    def republish(self, request, context_name, row_id):
        self._acting(request)
        ctx = self._outbox_context(context_name)
        row = ctx.outbox.objects.using(ctx.database).filter(id=row_id).first()
        if row is None:
            raise Http404
        count = operations.outbox_republish(context_name=context_name, row_ids=[row_id])
        rights.audit_record(request.user, [row], action="republish", reason=request.POST.get("reason", "").strip(),
                      detail=f"{row.message_type} {row.message_id} of {row.aggregate_id}")
        self.message_user(request, f"{count} row queued for publishing; the rows behind it follow once it is sent.",
                          messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:waybill_console_outbox"))

    def skip(self, request, context_name, row_id):
        self._acting(request)
        self._outbox_context(context_name)
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, "A skip needs a reason: nothing was skipped.", messages.ERROR)
        elif operations.outbox_skip(context_name=context_name, row_id=row_id, reason=reason, by=request.user):
            self.message_user(request, "Skipped: it will never be published; the rows behind it go now.",
                              messages.SUCCESS)
        else:
            self.message_user(request, "That row was sent meanwhile: nothing to skip.", messages.INFO)
        return HttpResponseRedirect(reverse("admin:waybill_console_outbox"))

    @staticmethod
    def _outbox_context(name: str) -> contexts.BoundedContext:
        ctx = next((c for c in contexts.all_contexts() if c.name == name and c.relay), None)
        if ctx is None:
            raise Http404
        return ctx

    @staticmethod
    def _rows(letters: list[console.DeadLetterRow]) -> list:
        return console.dead_letter_rows(letters)
