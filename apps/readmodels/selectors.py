from uuid import UUID

from django.db.models import QuerySet

from .models import CatalogItem, OrderSummary


def order_summaries_for_customer(*, customer_id: int) -> QuerySet[OrderSummary]:
    return OrderSummary.objects.filter(customer_id=customer_id).order_by("-updated_at")


def order_summary_for_customer(*, order_id: UUID, customer_id: int) -> OrderSummary | None:
    return OrderSummary.objects.filter(order_id=order_id, customer_id=customer_id).first()


def catalog() -> QuerySet[CatalogItem]:
    return CatalogItem.objects.order_by("sku")
