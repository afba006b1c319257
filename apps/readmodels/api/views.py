"""Queries served from the read models. A customer sees only their own orders."""

from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors
from .serializers import CatalogItemOutput, OrderSummaryOutput


class OrderSummaryListApi(APIView):
    @extend_schema(responses=OrderSummaryOutput(many=True), summary="Your order summaries, newest change first")
    def get(self, request):
        summaries = selectors.order_summaries_for_customer(customer_id=request.user.id)[:200]
        return Response(OrderSummaryOutput(summaries, many=True).data)


class OrderSummaryDetailApi(APIView):
    @extend_schema(responses={200: OrderSummaryOutput, 404: OpenApiResponse(description="No such order of yours")},
                   summary="One of your order summaries")
    def get(self, request, order_id: UUID):
        summary = selectors.order_summary_for_customer(order_id=order_id, customer_id=request.user.id)
        if summary is None:
            raise NotFound("No such order.")
        return Response(OrderSummaryOutput(summary).data)


class CatalogApi(APIView):
    # The shop window is public, as in any shop; prices and availability are not secrets.
    permission_classes = [AllowAny]

    @extend_schema(responses=CatalogItemOutput(many=True), summary="The catalog with live availability")
    def get(self, request):
        return Response(CatalogItemOutput(selectors.catalog(), many=True).data)
