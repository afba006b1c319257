"""Webhooks: endpoints that integrators register, and the signed deliveries of the public
events they asked for, with their retries."""

from waybill.manifest import Consumer, Context, Job

CONTEXT = Context(
    name="webhooks",
    api={"webhooks/": "apps.webhooks.api.urls"},
    # No micro-frontend: integrators use the API, operators the admin.
    static=False,
    consumers=(
        # Its handlers only record deliveries (in the inbox transaction); the job below
        # sends them. Its own worker, so a slow receiver holds up no other context.
        # Its queue binds only the types some active endpoint subscribes to (an order's events
        # are mostly wanted by nobody), kept so by its own worker: see
        # services.webhook_bindings_reconcile. It still handles every public event type.
        Consumer("webhooks", handlers="apps.webhooks.handlers:HANDLERS",
                 bindings="apps.webhooks.services:webhook_bindings_reconcile",
                 bindable="apps.webhooks.events:EVENT_TYPES"),
    ),
    jobs=(
        # What is due goes out within about a quarter of a second.
        Job("apps.webhooks.services:webhook_deliveries_send_due", every=0.25),
        # Finished deliveries past their retention; nothing urgent.
        Job("apps.webhooks.services:webhook_deliveries_prune", every=300.0),
    ),
    # Once every database is migrated: an existing deployment's endpoints, secrets and
    # delivery history move here from the readmodels database, where they were kept when
    # webhooks was part of readmodels (a no-op once they have).
    after_migrate=("webhooks_move_from_readmodels",),
)
