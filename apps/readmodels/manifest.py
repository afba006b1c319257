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
        # The operations dashboard, coalesced (at most once a second), and the change log's
        # retention.
        Job("apps.readmodels.services:dashboard_publish", every=1.0),
        Job("apps.readmodels.services:changes_prune_due", every=1.0),
        # Sends what is due; forgets finished deliveries past their retention.
        Job("apps.readmodels.webhooks.services:webhook_deliveries_send_due", every=0.25, consumer="webhooks"),
        Job("apps.readmodels.webhooks.services:webhook_deliveries_prune_due", every=1.0, consumer="webhooks"),
    ),
)
