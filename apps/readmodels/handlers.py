"""The projector: orders', payments', inventory's and the kernel's messages into query
models. Every message about an order becomes a step of its document's timeline; the
order's own events also carry its whole snapshot.

One ``Batched`` handler takes every type, so that a consumer's batch, whatever its mix, is
one run: its order steps are applied together (each order's document written once), and
of its product documents only each product's newest."""

from collections.abc import Callable

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from waybill.api import Batched, BatchItem, Envelope, Message, OutboxMeasured, ProcessesSupervised, Projection

from . import models, services
from .services import FAILED, OK, SKIPPED


def _order_changed(step: str, status: str):
    def order_changed(envelope: Envelope, snapshot: orders.OrderSnapshot) -> services.OrderStep:
        return _step(envelope, order_id=snapshot.order_id, step=step, status=status, reason=snapshot.reason,
                     state=services.OrderState(
                         customer_id=snapshot.customer_id, status=snapshot.status, reason=snapshot.reason,
                         lines=[{"sku": line.sku, "name": line.name, "quantity": line.quantity,
                                 "unit_price": str(line.unit_price.amount)} for line in snapshot.lines],
                         total=snapshot.total.amount, currency=snapshot.total.currency,
                         order_version=envelope.aggregate_version,
                     ))
    order_changed.__name__ = f"order_{step}"
    return order_changed


def _step(envelope: Envelope, *, order_id, step: str, status: str, reason: str = "",
          state: services.OrderState | None = None) -> services.OrderStep:
    return services.OrderStep(order_id=order_id, message_id=envelope.id, occurred_at=envelope.occurred_at,
                              step=step, status=status, reason=reason, state=state)


def payment_charged(envelope: Envelope, event: orders.PaymentCharged) -> services.OrderStep:
    return _step(envelope, order_id=event.order_id, step="payment_charged", status=OK)


def payment_declined(envelope: Envelope, event: orders.PaymentDeclined) -> services.OrderStep:
    return _step(envelope, order_id=event.order_id, step="payment_declined", status=FAILED, reason=event.reason)


def payment_refunded(envelope: Envelope, event: orders.PaymentRefunded) -> services.OrderStep:
    return _step(envelope, order_id=event.order_id, step="payment_refunded",
                 status=OK if event.refunded else SKIPPED, reason="" if event.refunded else "Nothing had been charged.")


def stock_reserved(envelope: Envelope, event: inventory.StockReserved) -> services.OrderStep:
    return _step(envelope, order_id=event.order_id, step="stock_reserved", status=OK)


def stock_reservation_rejected(envelope: Envelope, event: inventory.StockReservationRejected) -> services.OrderStep:
    return _step(envelope, order_id=event.order_id, step="stock_rejected", status=FAILED, reason=event.reason)


def stock_released(envelope: Envelope, event: inventory.StockReleased) -> services.OrderStep:
    return _step(envelope, order_id=event.order_id, step="stock_released", status=OK if event.lines else SKIPPED,
                 reason="" if event.lines else "Nothing was held.")


# Each message about an order, as the step it adds to the order's document.
ORDER_STEPS: dict[type[Message], Callable[[Envelope, Message], services.OrderStep]] = {
    orders.OrderPlaced: _order_changed("placed", OK),
    orders.OrderConfirmed: _order_changed("confirmed", OK),
    orders.OrderRejected: _order_changed("rejected", FAILED),
    orders.OrderCancelled: _order_changed("cancelled", OK),
    orders.PaymentCharged: payment_charged,
    orders.PaymentDeclined: payment_declined,
    orders.PaymentRefunded: payment_refunded,
    inventory.StockReserved: stock_reserved,
    inventory.StockReservationRejected: stock_reservation_rejected,
    inventory.StockReleased: stock_released,
}


def product_state(envelope: Envelope, document: inventory.ProductUpdated) -> services.ProductState:
    return services.ProductState(sku=document.sku, name=document.name, price=document.price,
                                 on_hand=document.on_hand, reserved=document.reserved,
                                 available=document.available, version=envelope.aggregate_version)


def on_outbox_measured(envelope: Envelope, report: OutboxMeasured) -> None:
    services.outbox_gauge_project(
        context=report.context, pending=report.pending, oldest_pending_age_s=report.oldest_pending_age_s,
        parked=report.parked, dead_letters=report.dead_letters, measured_at=report.measured_at,
        version=envelope.aggregate_version,
    )


def on_processes_supervised(envelope: Envelope, report: ProcessesSupervised) -> None:
    services.process_gauge_project(context=report.context, crashing=report.crashing,
                                   measured_at=report.measured_at, version=envelope.aggregate_version)


# The operations dashboard's reports: a few a minute, applied one by one.
GAUGES: dict[type[Message], Callable[[Envelope, Message], None]] = {
    OutboxMeasured: on_outbox_measured,
    ProcessesSupervised: on_processes_supervised,
}


def project(envelope: Envelope, message: Message) -> None:
    _project([(envelope, message)])


def project_many(items: list[BatchItem]) -> None:
    # The read side records no messages, so nothing here needs an item's ``handling``.
    _project([(item.envelope, item.message) for item in items])


def _project(messages: list[tuple[Envelope, Message]]) -> None:
    steps, products = [], []
    for envelope, message in messages:
        if type(message) in ORDER_STEPS:
            steps.append(ORDER_STEPS[type(message)](envelope, message))
        elif isinstance(message, inventory.ProductUpdated):
            products.append(product_state(envelope, message))
        else:
            GAUGES[type(message)](envelope, message)
    # Products first: an order's document shows its products' availability, as it would
    # had each message been applied alone, in turn.
    if products:
        services.catalog_items_project(products)
    if steps:
        services.order_steps_project(steps)
        if sales := [_sale(step) for step in steps if step.state is not None]:
            services.sales_project(sales)


def _sale(step: services.OrderStep) -> services.OrderSale:
    state = step.state
    return services.OrderSale(order_id=step.order_id, order_version=state.order_version, status=state.status,
                              occurred_at=step.occurred_at, lines=state.lines, currency=state.currency)


# Replay-safe: it writes read rows only, and applies a message once (a timeline keeps each
# message's id; documents and gauges are kept only when newer), whoever applies it first.
PROJECTION = Batched(one=project, many=project_many, replay_safe=True)

HANDLERS = dict.fromkeys([*ORDER_STEPS, inventory.ProductUpdated, *GAUGES], PROJECTION)

# What a rebuild can build again from the event history (``manage.py rebuild``), each into
# fresh tables of its own, switched whole. Products and orders are apart: an order's
# document reads the catalog only for what it pushes, and a replay pushes nothing.
PROJECTIONS = (
    Projection("orders", types=tuple(ORDER_STEPS),
               models=(models.OrderSummary, models.OrderStatusCount, models.OrderThroughput, models.DashboardDelta)),
    Projection("catalog", types=(inventory.ProductUpdated,), models=(models.CatalogItem,)),
    Projection("gauges", types=tuple(GAUGES), models=(models.OutboxGauge, models.ProcessGauge)),
    # Added after the others: filled from the past by ``manage.py rebuild --projection sales``.
    Projection("sales", types=tuple(orders.SNAPSHOT_EVENTS), models=(models.SaleLine,)),
)
