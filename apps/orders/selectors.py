from uuid import UUID

from .models import Order, ProductCopy


def order_get_for_customer(*, order_id: UUID, customer_id: int) -> Order | None:
    """The customer's own order, or None: another customer's order does not exist for them."""
    return Order.objects.prefetch_related("lines").filter(id=order_id, customer_id=customer_id).first()


def products_by_sku(*, skus: list[str]) -> dict[str, ProductCopy]:
    return {product.sku: product for product in ProductCopy.objects.filter(sku__in=skus)}
