"""Webhooks: integrators register a URL and the event types they want; every such event
is delivered to it signed (see ``signing``), retried with backoff, and recorded.

A bounded context of its own: its database, its consumer (``webhooks``: queue, inbox, dead
letters, worker), so a slow receiver never holds up another context. It consumes the
public events of orders and inventory like any other consumer, and holds copies of what it
was told (the delivery's body) and ids (the owner's user id). The consumer's handlers only
record deliveries, in the inbox transaction; a periodic job sends them, outside any
transaction. See docs/webhooks.md."""
