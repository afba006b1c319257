"""Following a stream, whatever carries it (WebSocket and SSE both follow through here):
who may see which change-log stream (``authorise``), where a client starts
(``snapshot``), and a client's place in it as changes arrive (``Follow``).

A client names a stream as it knows it: ``orders`` (the signed-in customer's own
orders), ``order:<uuid>`` (one of their orders), ``catalog``, and, staff only, ``stock``
and ``dashboard``. It never names a customer id, so it cannot ask for someone else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from channels.db import database_sync_to_async

from .. import selectors
from ..documents import catalog_item_document, order_documents, stock_item_document
from . import changelog


class Refused(Exception):
    """The client may not follow that stream (or there is no such stream)."""


@dataclass(frozen=True)
class Subscription:
    name: str  # as the client asked for it
    stream: str  # the change-log stream
    key: str | None = None  # only this row's changes (``order:<uuid>``)


# A stream position is a 64-bit integer in every database; a client's ``after`` above it
# is refused before a query is made of it (SQLite cannot even bind it).
MAX_POSITION = 2**63 - 1

# The names ``authorise`` knows, as the API schema states them (``order:`` with its UUID in
# canonical form; ``authorise`` reads any form ``UUID`` does).
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
NAME_PATTERN = rf"^(orders|catalog|stock|dashboard|order:{_UUID})$"


def authorise(user, name: str) -> Subscription:
    """The subscription ``user`` asked for as ``name``, or ``Refused``."""
    if user is None or not user.is_authenticated:
        raise Refused("sign in first")
    if name == "orders":
        return Subscription(name, changelog.customer_stream(user.id))
    if name.startswith("order:"):
        try:
            order_id = UUID(name.removeprefix("order:"))
        except ValueError:
            raise Refused("not an order id") from None
        # An order that is not (yet) the user's is refused, whether it exists or not.
        if selectors.order_summary_for_customer(order_id=order_id, customer_id=user.id) is None:
            raise Refused("no such order of yours")
        return Subscription(name, changelog.customer_stream(user.id), key=str(order_id))
    if name == "catalog":
        return Subscription(name, changelog.CATALOG)
    # Shared streams only staff may follow: the staff stock board and the dashboard.
    staff_streams = {"stock": changelog.STOCK, "dashboard": changelog.DASHBOARD}
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
    position = changelog.stream_position(subscription.stream)
    if subscription.stream == changelog.CATALOG:
        return position, [catalog_item_document(item) for item in selectors.catalog()]
    if subscription.stream == changelog.STOCK:
        return position, [stock_item_document(item) for item in selectors.catalog()]
    if subscription.stream == changelog.DASHBOARD:
        return position, [selectors.dashboard_document()]
    summaries = selectors.order_summaries_for_customer(customer_id=int(subscription.stream.rsplit(".", 1)[1]))
    if subscription.key:
        summaries = summaries.filter(order_id=subscription.key)
    return position, order_documents(summaries[:200])


def change_frame(name: str, change: dict) -> dict:
    """A change as sent to a client that follows it as ``name``."""
    return {"type": "change", **change, "stream": name}


@dataclass
class Follow:
    """One client's place in one stream: the last position it was sent (``None`` until
    the catch-up, or the connect of a fixed endpoint, sets it). Used by WebSocket and SSE."""

    subscription: Subscription
    last: int | None = None

    @property
    def name(self) -> str:
        return self.subscription.name

    async def catch_up(self, after: int | None) -> list[dict]:
        """The frames that bring a client from ``after`` (``None``: nothing) to now."""
        return await database_sync_to_async(self._catch_up)(after)

    def _catch_up(self, after: int | None) -> list[dict]:
        if after is not None:
            # Unfiltered, so that ``last`` moves past the other keys' changes too.
            missed = changelog.changes_since(stream=self.subscription.stream, position=after)
            if not isinstance(missed, changelog.Gap):
                self.last = max([after, *(change["position"] for change in missed)])
                return [change_frame(self.name, change) for change in missed if self._wants(change)]
        position, documents = snapshot(self.subscription)
        self.last = position
        return [{"type": "snapshot", "stream": self.name, "position": position, "documents": documents}]

    async def pushed(self, change: dict) -> list[dict]:
        """The frames a live push turns into: none for a repeat, the hole from the log
        (which includes this change, as it is committed) when positions skipped."""
        position = change["position"]
        if self.last is not None:
            if position <= self.last:
                return []
            if position > self.last + 1:
                return await self.catch_up(self.last)
        self.last = position
        return [change_frame(self.name, change)] if self._wants(change) else []

    def _wants(self, change: dict) -> bool:
        return self.subscription.key is None or change["key"] == self.subscription.key
