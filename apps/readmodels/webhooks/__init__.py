"""Webhooks: integrators register a URL and the event types they want; every such event
is delivered to it signed (see ``signing``), retried with backoff, and recorded.

A bulkhead of the readmodels context: its own consumer (``webhooks``: queue, inbox, dead
letters, worker), so a slow receiver never holds up the projector. The consumer's handlers
only record deliveries, in the inbox transaction; a periodic job of the same consumer sends
them, outside any transaction. See docs/webhooks.md."""
