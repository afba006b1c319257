"""Reads of the read models. Only rows of orders whose customer is known are ever
returned (a document started by inventory's answer waits for orders' first message)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from django.db.models import QuerySet, Sum
from django.utils import timezone

from .models import (
    CatalogItem, Dashboard, OrderStatusCount, OrderSummary, OrderThroughput, OutboxGauge, ProcessGauge, SaleLine,
)
from .documents import order_documents

THROUGHPUT_MINUTES = 15


def order_summaries_for_customer(*, customer_id: int) -> QuerySet[OrderSummary]:
    return OrderSummary.objects.filter(customer_id=customer_id).order_by("-updated_at")


def order_summary_for_customer(*, order_id: UUID, customer_id: int) -> OrderSummary | None:
    return OrderSummary.objects.filter(order_id=order_id, customer_id=customer_id).first()


def order_documents_for_customer(*, customer_id: int, limit: int = 200) -> list[dict]:
    """The customer's order documents, most recently changed first."""
    return order_documents(order_summaries_for_customer(customer_id=customer_id)[:limit])


def catalog() -> QuerySet[CatalogItem]:
    return CatalogItem.objects.order_by("sku")


def products(*, skus) -> list[CatalogItem]:
    return list(CatalogItem.objects.filter(sku__in=set(skus)).order_by("sku"))


def dashboard_version() -> int:
    return Dashboard.objects.filter(key="dashboard").values_list("version", flat=True).first() or 0


def dashboard_document(*, version: int | None = None, now: datetime | None = None) -> dict:
    """The operations dashboard: orders per status and throughput per minute (folded
    counters: changes not folded yet show at the next version), and each context's last
    outbox report, and the processes that the contexts' supervisors report as crashing.
    ``throughput`` has one entry per minute of the last 15, oldest first."""
    now = now or timezone.now()
    if version is None:
        version = dashboard_version()
    first = (now - timedelta(minutes=THROUGHPUT_MINUTES - 1)).replace(second=0, microsecond=0)
    minutes = {row.minute: row for row in OrderThroughput.objects.filter(minute__gte=first)}
    throughput = []
    for n in range(THROUGHPUT_MINUTES):
        minute = first + timedelta(minutes=n)
        row = minutes.get(minute)
        throughput.append({"minute": minute.isoformat(), **{
            event: getattr(row, event) if row else 0 for event in ("placed", "confirmed", "rejected", "cancelled")}})
    return {
        "version": version,
        "orders_by_status": {row.status: row.count for row in OrderStatusCount.objects.order_by("status") if row.count},
        "outboxes": [
            {"context": gauge.context, "pending": gauge.pending, "oldest_pending_age_s": gauge.oldest_pending_age_s,
             "parked": gauge.parked, "dead_letters": gauge.dead_letters, "measured_at": gauge.measured_at.isoformat()}
            for gauge in OutboxGauge.objects.order_by("context")
        ],
        "crashing_processes": [
            {"name": name, "context": gauge.context, "state": state, "measured_at": gauge.measured_at.isoformat()}
            for gauge in ProcessGauge.objects.order_by("context") for name, state in sorted(gauge.crashing.items())
        ],
        "throughput": throughput,
    }


def sales_by_day(*, days: int, today: date | None = None) -> list[dict]:
    """Units and revenue sold per product per day, the last ``days`` days up to ``today``
    (UTC), by day then SKU."""
    today = today or timezone.now().astimezone(UTC).date()
    return list(SaleLine.objects.using("readmodels").filter(sold=True, day__gt=today - timedelta(days=days))
                .values("day", "sku", "currency").annotate(quantity=Sum("quantity"), revenue=Sum("revenue"))
                .order_by("day", "sku", "currency"))
