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
    consumers=(Consumer("readmodels", handlers="apps.readmodels.handlers:HANDLERS",
                        projections="apps.readmodels.handlers:PROJECTIONS"),),
    jobs=(
        # The operations dashboard: pushed at most once a second (DASHBOARD_MIN_SECONDS, kept
        # across processes by the dashboard row itself).
        Job("apps.readmodels.services:dashboard_publish", every=1.0),
        # The change log's retention: old entries go every ten minutes (a client further
        # behind gets a snapshot); repeating a delete of old rows is harmless.
        Job("apps.readmodels.live.changelog:changes_prune", every=600.0),
    ),
    # The live connections of this process, for Prometheus.
    metrics="apps.readmodels.metrics:COLLECTORS",
)
