from uuid import UUID

from .models import Order


def order_get_for_customer(*, order_id: UUID, customer_id: int) -> Order | None:
    """The customer's own order, or None: another customer's order does not exist for them."""
    return Order.objects.prefetch_related("lines").filter(id=order_id, customer_id=customer_id).first()

