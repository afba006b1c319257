"""One view that does the whole order in one request and one transaction.

``POST /api/v1/sync-orders/`` with the body and headers of ``POST /api/v1/orders/``
(``{"lines": [{"sku", "quantity"}]}``, ``Authorization: Token``, ``Idempotency-Key``):

1. DRF authenticates the token and parses JSON, as Waybill's ``OrderPlaceApi`` does
   (same settings, same middleware); the lines are validated by Waybill's own
   ``LineInput`` serializer (1..20 lines, 1..100 units, one line per SKU, known SKUs).
2. ``BEGIN``: with an Idempotency-Key, a retry returns the stored order (same rule as
   ``orders.services.order_place``); the products are read once to price the lines.
3. The order (Waybill's ``orders.Order``) and its lines are inserted.
4. Each line is reserved with the same atomic conditional UPDATE as
   ``inventory.services.stock_reserve`` (``on_hand >= reserved + quantity``, sorted by SKU,
   all lines or none, inside a savepoint), on Waybill's ``inventory.Product``.
5. The payment sandbox is charged over HTTP, ``POST /v1/charges`` with the idempotency
   key ``charge-<order id>``, the bearer key and the same timeout as Waybill's payments
   consumer, through one pooled keep-alive ``httpx.Client`` per process (Waybill calls
   ``httpx.post``, which builds a client and an SSL context per call; the baseline does
   what a careful synchronous implementation would). No circuit breaker.
6. Approved: the order becomes CONFIRMED (version 2). Declined: the reservation savepoint
   is rolled back and the order is REJECTED with the reason. ``COMMIT``.
7. 201 with Waybill's ``OrderOutput`` (status CONFIRMED): the client has the final status.

No outbox, no messages, no read model, no push: the status comes back in the response.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from functools import cache

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.inventory.models import Product
from apps.orders.api.serializers import LineInput, OrderOutput
from apps.orders.models import Order, OrderLine


class SyncOrderInput(serializers.Serializer):
    lines = LineInput(many=True, allow_empty=False, max_length=settings.WAYBILL_ORDER_MAX_LINES)


class Refused(Exception):
    pass


@cache
def _client() -> httpx.Client:
    # One per process, shared by the request threads (httpx.Client is thread-safe).
    return httpx.Client(base_url=settings.WAYBILL_PAYMENT_GATEWAY_URL, timeout=settings.WAYBILL_PAYMENT_TIMEOUT_SECONDS)


def _charge(order: Order) -> dict:
    headers = {"Idempotency-Key": f"charge-{order.id}"}
    if settings.WAYBILL_PAYMENT_API_KEY:
        headers["Authorization"] = f"Bearer {settings.WAYBILL_PAYMENT_API_KEY}"
    response = _client().post("/v1/charges", headers=headers,
                              json={"amount": f"{order.total:.2f}", "currency": settings.WAYBILL_CURRENCY,
                                    "reference": str(order.id)})
    response.raise_for_status()
    return response.json()


class SyncOrderPlaceApi(APIView):
    def post(self, request):
        data = SyncOrderInput(data=request.data)
        data.is_valid(raise_exception=True)
        lines = data.validated_data["lines"]
        key = request.headers.get("Idempotency-Key", "").strip()[:200]
        fingerprint = hashlib.sha256(
            json.dumps(sorted((line["sku"], line["quantity"]) for line in lines)).encode()).hexdigest()
        try:
            with transaction.atomic():
                if key:
                    existing = Order.objects.filter(customer_id=request.user.id, idempotency_key=key).first()
                    if existing is not None:
                        if existing.request_fingerprint != fingerprint:
                            return Response({"detail": "Idempotency-Key reused."}, status=status.HTTP_409_CONFLICT)
                        return Response(OrderOutput(existing).data, status=status.HTTP_200_OK)
                skus = [line["sku"] for line in lines]
                products = {p.sku: p for p in Product.objects.filter(sku__in=skus)}
                if len(set(skus)) != len(skus):
                    raise Refused("one line per SKU")
                if unknown := [sku for sku in skus if sku not in products]:
                    raise Refused(f"unknown SKU {unknown[0]}")
                order = Order.objects.create(
                    customer_id=request.user.id,
                    total=sum((products[line["sku"]].price * line["quantity"] for line in lines), Decimal("0")),
                    idempotency_key=key, request_fingerprint=fingerprint if key else "",
                )
                OrderLine.objects.bulk_create(
                    OrderLine(order=order, sku=line["sku"], name=products[line["sku"]].name,
                              quantity=line["quantity"], unit_price=products[line["sku"]].price)
                    for line in lines
                )
                reservation = transaction.savepoint()
                for line in sorted(lines, key=lambda line: line["sku"]):
                    held = Product.objects.filter(
                        sku=line["sku"], on_hand__gte=F("reserved") + line["quantity"]
                    ).update(reserved=F("reserved") + line["quantity"], version=F("version") + 1)
                    if not held:
                        raise Refused(f"not enough stock for {line['sku']}")
                charge = _charge(order)
                if charge["status"] == "succeeded":
                    transaction.savepoint_commit(reservation)
                    order.status = Order.Status.CONFIRMED
                else:
                    transaction.savepoint_rollback(reservation)
                    order.status = Order.Status.REJECTED
                    order.reason = f"Payment declined: {(charge.get('decline_code') or '').replace('_', ' ')}."
                order.version += 1
                order.save()
        except Refused as refused:
            return Response({"lines": [str(refused)]}, status=status.HTTP_400_BAD_REQUEST)
        except httpx.HTTPError as exc:
            return Response({"detail": f"payment provider: {exc}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(OrderOutput(order).data, status=status.HTTP_201_CREATED)
