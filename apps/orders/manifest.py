"""Orders: the order aggregate, the order saga and the payments bulkhead."""

from waybill.manifest import Consumer, Context, Job

CONTEXT = Context(
    name="orders",
    api={"orders/": "apps.orders.api.urls"},
    consumers=(
        Consumer(
            "orders",
            handlers="apps.orders.handlers:HANDLERS",
            # Orders follows inventory.product_listed since it was split from the
            # stock-level document.
            retired_types=("inventory.product_updated",),
        ),
        # The payments bulkhead: its own queue, inbox and worker, and orders' outbox, so
        # slow calls to the payment provider never hold up the rest of orders.
        Consumer(
            "payments",
            handlers="apps.orders.payments:HANDLERS",
            inbox="PaymentInboxMessage",
            dead_letters="PaymentDeadLetter",
            bulkhead=True,
            # Keep trying while the saga waits; its deadline decides when to give up.
            retry_max_attempts=100,
            retry_max_seconds=5.0,
        ),
    ),
    # Saga deadlines, every second: well inside WAYBILL_SAGA_CLOCK_GAP_SECONDS, the gap
    # between two runs that the saga clock takes for an outage.
    jobs=(Job("apps.orders.saga:saga_expire_overdue", every=1.0),),
    variables=("WAYBILL_PAYMENT_GATEWAY_URL", "WAYBILL_PAYMENT_API_KEY"),
    # Sagas by state and the payment breaker, for Prometheus.
    metrics="apps.orders.metrics:COLLECTORS",
)
