"""Read models: the projections and their live push (WebSocket and SSE)."""

from waybill.manifest import Consumer, Context, Job

CONTEXT = Context(
    name="readmodels",
    title="Read models",
    api={
        "read/": "apps.readmodels.api.urls",
        "events/": "apps.readmodels.api.events_urls",
    },
    websockets="apps.readmodels.routing:websocket_urlpatterns",
    consumers=(Consumer("readmodels", handlers="apps.readmodels.handlers:HANDLERS"),),
    jobs=(
        # The operations dashboard, coalesced (at most once a second), and the change log's
        # retention.
        Job("apps.readmodels.services:dashboard_publish", every=1.0),
        Job("apps.readmodels.services:changes_prune_due", every=1.0),
    ),
)
