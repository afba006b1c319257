"""Orders API. Placing an order answers 202: the outcome (CONFIRMED or REJECTED) arrives
asynchronously; watch ``summary_url`` on the read side."""

from uuid import UUID

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from .. import selectors, services
from ..models import Order
from .serializers import OrderOutput, OrderPlaceInput

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER,
    description="Retrying with the same key returns the first order instead of placing another.",
)
IF_MATCH = OpenApiParameter(
    "If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER,
    description='The order\'s ETag (or several, comma-separated, or "*" for any current version); '
                "one that does not match gets 412 and changes nothing.",
)


def _order_response(order: Order, *, status_code: int = status.HTTP_200_OK, **headers) -> Response:
    return Response(OrderOutput(order).data, status=status_code,
                    headers={"ETag": f'"{order.version}"', **headers})


class OrderPlaceApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "orders.place"

    @extend_schema(
        request=OrderPlaceInput, parameters=[IDEMPOTENCY_KEY],
        responses={202: OrderOutput,
                   400: OpenApiResponse(description=(
                       "Field errors, each under its field; a line's under its index, e.g. "
                       '`{"lines": {"0": {"sku": ["Unknown SKU LAMP-9."]}}}` for a SKU the shop does not '
                       "sell, or one already on an earlier line")),
                   409: OpenApiResponse(description="Idempotency-Key reused with other lines"),
                   429: OpenApiResponse(description="Too many orders; Retry-After says when to try again")},
        summary="Place an order (answers 202; the outcome arrives on the read side)",
    )
    def post(self, request):
        data = OrderPlaceInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 200:
            raise ValidationError({"Idempotency-Key": ["At most 200 characters."]})
        try:
            order, created = services.order_place(
                customer_id=request.user.id,
                lines=[services.LineRequest(**line) for line in data.validated_data["lines"]],
                idempotency_key=key,
            )
        except services.OrderConflict as conflict:
            return Response({"detail": str(conflict)}, status=status.HTTP_409_CONFLICT)
        except services.OrderLinesRefused as refused:
            # Keyed by line index, the shape DRF gives the lines' own field errors.
            lines = {index: {"sku": [reason]} for index, reason in refused.reasons.items()}
            raise ValidationError({"lines": lines}) from None
        except services.OrderError as refused:
            raise ValidationError({refused.field or "non_field_errors": [str(refused)]}) from None
        headers = {"Location": f"/api/v1/orders/{order.id}/"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return _order_response(order, status_code=status.HTTP_202_ACCEPTED, **headers)


class OrderDetailApi(APIView):
    @extend_schema(responses={200: OrderOutput, 404: OpenApiResponse(description="No such order of yours")},
                   summary="One of your orders, with its version as ETag")
    def get(self, request, order_id: UUID):
        order = selectors.order_get_for_customer(order_id=order_id, customer_id=request.user.id)
        if order is None:
            raise NotFound("No such order.")
        return _order_response(order)


class OrderCancelApi(APIView):
    @extend_schema(
        request=None, parameters=[IF_MATCH],
        responses={202: OrderOutput, 404: OpenApiResponse(description="No such order of yours"),
                   409: OpenApiResponse(description="Already settled"),
                   412: OpenApiResponse(description="If-Match names no current version of the order")},
        summary="Cancel a PENDING or CONFIRMED order; its stock is released",
    )
    def post(self, request, order_id: UUID):
        try:
            order = services.order_cancel(
                order_id=order_id, customer_id=request.user.id,
                expected_versions=_if_match_versions(request.headers.get("If-Match")),
            )
        except services.OrderVersionMismatch as stale:
            return Response({"detail": str(stale)}, status=status.HTTP_412_PRECONDITION_FAILED)
        except services.OrderConflict as conflict:
            return Response({"detail": str(conflict)}, status=status.HTTP_409_CONFLICT)
        if order is None:
            raise NotFound("No such order.")
        return _order_response(order, status_code=status.HTTP_202_ACCEPTED)


def _if_match_versions(header: str | None) -> frozenset[int] | None:
    """The versions an ``If-Match`` header accepts (RFC 9110, 13.1.1); ``None`` when any
    current version will do: no header, or ``*``. Entity tags compare strongly, so a weak
    one (``W/"3"``), or one that is not an ETag of ours, names no version: a header of only
    those matches nothing and is a 412, never a 400, whatever its text."""
    if header is None or not header.strip() or header.strip() == "*":
        return None
    versions = set()
    for tag in header.split(","):
        tag = tag.strip()
        inner = tag[1:-1]
        # Our versions fit in 19 digits; a longer run of digits is no ETag of ours (and
        # int() refuses over 4,300 of them).
        if len(tag) >= 2 and tag[0] == tag[-1] == '"' and inner.isascii() and inner.isdigit() and len(inner) <= 19:
            versions.add(int(inner))
    return frozenset(versions)
