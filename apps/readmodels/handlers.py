"""The projector: orders', payments', inventory's and the kernel's messages into query
models. Every message about an order becomes a step of its document's timeline; the
order's own events also carry its whole snapshot."""

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from waybill.api import Envelope, OutboxMeasured, ProcessesSupervised

from . import services
from .services import FAILED, OK, SKIPPED


def _step(envelope: Envelope, *, order_id, step: str, status: str, reason: str = "",
          state: services.OrderState | None = None) -> None:
    services.order_step_project(order_id=order_id, message_id=envelope.id, occurred_at=envelope.occurred_at,
                                step=step, step_status=status, reason=reason, state=state)


def _order_changed(step: str, status: str):
    def on_order_changed(envelope: Envelope, snapshot: orders.OrderSnapshot) -> None:
        _step(envelope, order_id=snapshot.order_id, step=step, status=status, reason=snapshot.reason,
              state=services.OrderState(
                  customer_id=snapshot.customer_id, status=snapshot.status, reason=snapshot.reason,
                  lines=[line.model_dump(mode="json") for line in snapshot.lines], total=snapshot.total,
                  order_version=envelope.aggregate_version,
              ))
    on_order_changed.__name__ = f"on_order_{step}"
    return on_order_changed


def on_payment_charged(envelope: Envelope, event: orders.PaymentCharged) -> None:
    _step(envelope, order_id=event.order_id, step="payment_charged", status=OK)


def on_payment_declined(envelope: Envelope, event: orders.PaymentDeclined) -> None:
    _step(envelope, order_id=event.order_id, step="payment_declined", status=FAILED, reason=event.reason)


def on_payment_refunded(envelope: Envelope, event: orders.PaymentRefunded) -> None:
    _step(envelope, order_id=event.order_id, step="payment_refunded", status=OK if event.refunded else SKIPPED,
          reason="" if event.refunded else "Nothing had been charged.")


def on_stock_reserved(envelope: Envelope, event: inventory.StockReserved) -> None:
    _step(envelope, order_id=event.order_id, step="stock_reserved", status=OK)


def on_stock_reservation_rejected(envelope: Envelope, event: inventory.StockReservationRejected) -> None:
    _step(envelope, order_id=event.order_id, step="stock_rejected", status=FAILED, reason=event.reason)


def on_stock_released(envelope: Envelope, event: inventory.StockReleased) -> None:
    _step(envelope, order_id=event.order_id, step="stock_released", status=OK if event.lines else SKIPPED,
          reason="" if event.lines else "Nothing was held.")


def on_product_updated(envelope: Envelope, document: inventory.ProductUpdated) -> None:
    services.catalog_item_project(
        sku=document.sku, name=document.name, price=document.price, on_hand=document.on_hand,
        reserved=document.reserved, available=document.available, version=envelope.aggregate_version,
    )


def on_outbox_measured(envelope: Envelope, report: OutboxMeasured) -> None:
    services.outbox_gauge_project(
        context=report.context, pending=report.pending, oldest_pending_age_s=report.oldest_pending_age_s,
        parked=report.parked, dead_letters=report.dead_letters, measured_at=report.measured_at,
        version=envelope.aggregate_version,
    )


def on_processes_supervised(envelope: Envelope, report: ProcessesSupervised) -> None:
    services.process_gauge_project(context=report.context, crashing=report.crashing,
                                   measured_at=report.measured_at, version=envelope.aggregate_version)


HANDLERS = {
    orders.OrderPlaced: _order_changed("placed", OK),
    orders.OrderConfirmed: _order_changed("confirmed", OK),
    orders.OrderRejected: _order_changed("rejected", FAILED),
    orders.OrderCancelled: _order_changed("cancelled", OK),
    orders.PaymentCharged: on_payment_charged,
    orders.PaymentDeclined: on_payment_declined,
    orders.PaymentRefunded: on_payment_refunded,
    inventory.StockReserved: on_stock_reserved,
    inventory.StockReservationRejected: on_stock_reservation_rejected,
    inventory.StockReleased: on_stock_released,
    inventory.ProductUpdated: on_product_updated,
    OutboxMeasured: on_outbox_measured,
    ProcessesSupervised: on_processes_supervised,
}
