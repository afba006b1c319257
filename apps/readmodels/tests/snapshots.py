"""Orders' snapshots applied without a message, for tests that need an order document in a
given state: each becomes the step its status implies, under a message id derived from
the order and version, so the same snapshot applied twice is one message."""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

from django.utils import timezone

from apps.readmodels import services

STATUS_STEPS = {"PENDING": ("placed", services.OK), "CONFIRMED": ("confirmed", services.OK),
                "REJECTED": ("rejected", services.FAILED), "CANCELLED": ("cancelled", services.OK)}


def order_snapshot_project(*, order_id: UUID, customer_id: int, status: str, reason: str, lines: list[dict],
                           total: Decimal, version: int) -> bool:
    """``services.order_step_project`` for an order snapshot at orders' ``version``; False
    when that snapshot was already applied."""
    step, step_status = STATUS_STEPS[status]
    return services.order_step_project(
        order_id=order_id, message_id=uuid.uuid5(order_id, f"snapshot-{version}"), occurred_at=timezone.now(),
        step=step, step_status=step_status, reason=reason,
        state=services.OrderState(customer_id=customer_id, status=status, reason=reason, lines=lines, total=total,
                                  currency="EUR", order_version=version),
    )
