from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Value, When
from django.db.models.functions import Now
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from waybill.api import (
    FlowNote,
    DeadLetterAdmin,
    InboxAdmin,
    OutboxAdmin,
    ReadOnlyAdmin,
    audit_record,
    console_link,
    flow_link,
    flow_notes,
    flow_url,
)

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
    list_display = ("id", "customer_id", "status", "total", "version", "created_at", "updated_at", "flow")
    readonly_fields = ("flow",)
    list_filter = ("status",)
    search_fields = ("id", "customer_id", "reason")
    inlines = [OrderLineInline]

    @admin.display(description="flow")
    def flow(self, order):
        return flow_link(order.id, "its flow")


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


# The steps an open saga has still to take, after its current one, in order.
TO_COME = {
    (OrderSaga.State.RUNNING, OrderSaga.Step.RESERVE_STOCK): ["charge_payment", "confirm the order"],
    (OrderSaga.State.RUNNING, OrderSaga.Step.CHARGE_PAYMENT): ["confirm the order"],
    (OrderSaga.State.COMPENSATING, OrderSaga.Step.RELEASE_STOCK): ["reject the order"],
}
BOARD_FINISHED = 50  # finished sagas the board lists


@admin.register(OrderSaga)
class OrderSagaAdmin(ReadOnlyAdmin):
    """Open sagas first, the longest stuck at the top; each with its timeline. The board
    (``board/``) shows the same live: deadlines counting down, the steps to come and the
    compensations taken."""

    list_display = ("order_id", "state", "step", "attempts", "deadline_at", "overdue", "stuck_for", "last_error",
                    "flow")
    list_filter = ("state", "step")
    search_fields = ("order_id", "outcome_reason", "last_error")
    fields = ("order_id", "state", "step", "deadline_at", "attempts", "outcome_reason", "last_error",
              "version", "started_at", "updated_at", "flow")
    readonly_fields = ("flow",)
    inlines = [SagaStepInline]
    actions = ("compensate_now",)
    change_list_template = "orders/admin/saga_change_list.html"

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

    @admin.display(description="flow")
    def flow(self, saga):
        return flow_link(saga.order_id, "its flow")

    @admin.action(description="Compensate now (bring the deadline forward)", permissions=["operate"])
    def compensate_now(self, request, queryset):
        """Asks first, with the reason the admin's history keeps (a compensation refunds and
        rejects: not an act to take without saying why)."""
        reason = request.POST.get("reason", "").strip()
        if "confirm" not in request.POST or not reason:
            return TemplateResponse(request, "orders/admin/compensate_confirm.html", {
                **self.admin_site.each_context(request), "title": "Compensate these sagas now?",
                "opts": self.opts, "sagas": queryset, "missing_reason": "confirm" in request.POST,
                "selected": ACTION_CHECKBOX_NAME,
            })
        sagas_chosen = list(queryset)
        count = sagas.saga_deadline_bring_forward(order_ids=[saga.order_id for saga in sagas_chosen])
        audit_record(request.user, sagas_chosen, action="compensate now", reason=reason)
        self.message_user(request, f"{count} sagas will compensate at the next sweep (about a second).",
                          messages.SUCCESS)
        return None

    # --- the live board ----------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("board/", view(self.board), name="orders_ordersaga_board"),
                path("board.json", view(self.board_json), name="orders_ordersaga_board_json"),
                *super().get_urls()]

    def board(self, request):
        # The saga table's own view right: the board shows what its list shows, live.
        if not self.has_view_permission(request):
            raise PermissionDenied
        return TemplateResponse(request, "orders/admin/saga_board.html", {
            **self.admin_site.each_context(request), "title": "Sagas board", "opts": self.opts,
            "is_nav_sidebar_enabled": False,
            "data_url": reverse("admin:orders_ordersaga_board_json"),
        })

    def board_json(self, request):
        """Open sagas, the longest stuck first, and the latest finished ones (``?outcome=``
        completed or compensated). Deadlines come as seconds left by the database's clock,
        so a browser whose clock is off still counts down right."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        db = sagas.DB
        open_ = list(OrderSaga.objects.using(db).exclude(state__in=OrderSaga.TERMINAL)
                     .annotate(now=Now()).order_by("updated_at")[:200])
        finished = OrderSaga.objects.using(db).filter(state__in=OrderSaga.TERMINAL)
        if request.GET.get("outcome") in OrderSaga.TERMINAL:
            finished = finished.filter(state=request.GET["outcome"])
        finished = list(finished.annotate(now=Now()).order_by("-updated_at")[:BOARD_FINISHED])
        steps = {}
        for step in SagaStep.objects.using(db).filter(saga_id__in=[s.order_id for s in open_ + finished])                 .order_by("id"):
            steps.setdefault(step.saga_id, []).append(step)
        return JsonResponse({
            "open": [self._board_row(saga, steps.get(saga.order_id, [])) for saga in open_],
            "finished": [self._board_row(saga, steps.get(saga.order_id, [])) for saga in finished],
        })

    @staticmethod
    def _board_row(saga: OrderSaga, timeline: list[SagaStep]) -> dict:
        now = saga.now
        return {
            "order_id": str(saga.order_id), "state": saga.state, "step": saga.step, "attempts": saga.attempts,
            "seconds_left": (saga.deadline_at - now).total_seconds() if saga.deadline_at else None,
            "stuck_for_s": (now - saga.updated_at).total_seconds(),
            "started_at": saga.started_at.isoformat(), "updated_at": saga.updated_at.isoformat(),
            "to_come": TO_COME.get((saga.state, saga.step), []),
            "compensations": [{"step": s.step, "reason": s.reason, "at": s.at.isoformat()}
                              for s in timeline if s.event == SagaStep.Event.COMPENSATED],
            "last_error": saga.last_error, "outcome_reason": saga.outcome_reason,
            "url": reverse("admin:orders_ordersaga_change", args=[saga.order_id]),
            "flow_url": flow_url(saga.order_id),
        }


console_link("Sagas board", "admin:orders_ordersaga_board")


@flow_notes("orders")
def saga_steps_in_flow(message_ids):
    """The saga's steps that sent a message of the flow."""
    for step in SagaStep.objects.using(sagas.DB).filter(message_id__in=message_ids).order_by("id"):
        yield FlowNote(message_id=step.message_id, context="orders", what=f"saga step {step.step}",
                          status=step.event, at=step.at, error=step.reason,
                          url=reverse("admin:orders_ordersaga_change", args=[step.saga_id]))


@admin.register(CircuitState)
class CircuitStateAdmin(ReadOnlyAdmin):
    """The payment provider's circuit breaker: open means charges fail fast and wait."""

    list_display = ("name", "state", "failures", "changed_at", "process")


admin.site.register(OutboxMessage, OutboxAdmin)
admin.site.register(InboxMessage, InboxAdmin)
admin.site.register(DeadLetter, DeadLetterAdmin)
admin.site.register(PaymentInboxMessage, InboxAdmin)
admin.site.register(PaymentDeadLetter, DeadLetterAdmin)
