"""What a client may follow, and where it starts: the one place that decides who can
see which change-log stream (WebSocket and SSE both ask here).

A client names a stream as it knows it: ``orders`` (the signed-in customer's own
orders), ``order:<uuid>`` (one of their orders), ``catalog``, and, staff only, ``stock``
and ``dashboard``. It never names a customer id, so it cannot ask for someone else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from . import changes, selectors
from .serializers_live import catalog_item_document, order_documents, stock_item_document


class Refused(Exception):
    """The client may not follow that stream (or there is no such stream)."""


@dataclass(frozen=True)
class Subscription:
    name: str  # as the client asked for it
    stream: str  # the change-log stream
    key: str | None = None  # only this row's changes (``order:<uuid>``)


def authorise(user, name: str) -> Subscription:
    """The subscription ``user`` asked for as ``name``, or ``Refused``."""
    if user is None or not user.is_authenticated:
        raise Refused("sign in first")
    if name == "orders":
        return Subscription(name, changes.customer_stream(user.id))
    if name.startswith("order:"):
        try:
            order_id = UUID(name.removeprefix("order:"))
        except ValueError:
            raise Refused("not an order id") from None
        # An order that is not (yet) the user's is refused, whether it exists or not.
        if selectors.order_summary_for_customer(order_id=order_id, customer_id=user.id) is None:
            raise Refused("no such order of yours")
        return Subscription(name, changes.customer_stream(user.id), key=str(order_id))
    if name == "catalog":
        return Subscription(name, changes.CATALOG)
    # Shared streams only staff may follow: the staff stock board and the dashboard.
    staff_streams = {"stock": changes.STOCK, "dashboard": changes.DASHBOARD}
    if name in staff_streams:
        if not user.is_staff:
            raise Refused("staff only")
        return Subscription(name, staff_streams[name])
    raise Refused(f"unknown stream {name!r}")


def snapshot(subscription: Subscription) -> tuple[int, list[dict]]:
    """The current documents of the subscription, and the stream position they are at.

    The position is read first: a change committed while the documents are read is then
    both in them and sent again after (documents carry versions, so a client applies it
    once), never missed."""
    position = changes.stream_position(subscription.stream)
    if subscription.stream == changes.CATALOG:
        return position, [catalog_item_document(item) for item in selectors.catalog()]
    if subscription.stream == changes.STOCK:
        return position, [stock_item_document(item) for item in selectors.catalog()]
    if subscription.stream == changes.DASHBOARD:
        return position, [selectors.dashboard_document()]
    summaries = selectors.order_summaries_for_customer(customer_id=int(subscription.stream.rsplit(".", 1)[1]))
    if subscription.key:
        summaries = summaries.filter(order_id=subscription.key)
    return position, order_documents(summaries[:200])
