"""Read models: the projections, their live push (WebSocket and SSE), and webhooks."""

from waybill.manifest import Consumer, Context, Job

CONTEXT = Context(
    name="readmodels",
    title="Read models",
    api={
        "read/": "apps.readmodels.api.urls",
        "events/": "apps.readmodels.api.events_urls",
        "webhooks/": "apps.readmodels.api.webhook_urls",
    },
    websockets="apps.readmodels.routing:websocket_urlpatterns",
    consumers=(
        Consumer("readmodels", handlers="apps.readmodels.handlers:HANDLERS"),
        # The webhooks bulkhead: its own queue, inbox and worker, so a slow receiver never
        # holds up the projector. It records deliveries; its periodic job sends them.
        Consumer(
            "webhooks",
            handlers="apps.readmodels.webhooks.handlers:HANDLERS",
            inbox="WebhookInbox",
            dead_letters="WebhookDeadLetter",
            bulkhead=True,
        ),
    ),
    jobs=(
        # The operations dashboard: pushed at most once a second (DASHBOARD_MIN_SECONDS, kept
        # across processes by the dashboard row itself).
        Job("apps.readmodels.services:dashboard_publish", every=1.0),
        # The change log's retention: old entries go every ten minutes (a client further
        # behind gets a snapshot); repeating a delete of old rows is harmless.
        Job("apps.readmodels.live.changelog:changes_prune", every=600.0),
        # Sends what is due; forgets finished deliveries past their retention.
        Job("apps.readmodels.webhooks.services:webhook_deliveries_send_due", every=0.25, consumer="webhooks"),
        Job("apps.readmodels.webhooks.services:webhook_deliveries_prune_due", every=1.0, consumer="webhooks"),
    ),
)
