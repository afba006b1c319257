"""Queries served from the read models, and the backend-for-frontend's pages (one call
per page, so the browser never chains calls across contexts). A customer sees only their
own orders; the stock board and the dashboard are for staff."""

from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from waybill.api import single_valued

from .. import selectors
from ..documents import catalog_item_document, order_document, stock_item_document
from .serializers import (
    CatalogItemOutput, DashboardOutput, OrderPageOutput, OrderSummaryOutput, SalesDayOutput, SalesQuery,
    ShopPageOutput, StockItemOutput,
)

NOT_YOURS = OpenApiResponse(description="No such order of yours")
STAFF_ONLY = OpenApiResponse(description="Staff only")


def _own_order(request, order_id: UUID):
    summary = selectors.order_summary_for_customer(order_id=order_id, customer_id=request.user.id)
    if summary is None:
        raise NotFound("No such order.")  # whether it exists or belongs to someone else
    return summary


class OrderSummaryListApi(APIView):
    @extend_schema(responses=OrderSummaryOutput(many=True), summary="Your orders, most recently changed first")
    def get(self, request):
        documents = selectors.order_documents_for_customer(customer_id=request.user.id)
        return Response(OrderSummaryOutput(documents, many=True).data)


class OrderSummaryDetailApi(APIView):
    @extend_schema(responses={200: OrderSummaryOutput, 404: NOT_YOURS}, summary="One of your orders")
    def get(self, request, order_id: UUID):
        return Response(OrderSummaryOutput(order_document(_own_order(request, order_id))).data)


class CatalogApi(APIView):
    # The shop window is public, as in any shop; prices and availability are not secrets.
    permission_classes = [AllowAny]

    @extend_schema(responses=CatalogItemOutput(many=True), summary="The catalog with live availability")
    def get(self, request):
        return Response(CatalogItemOutput(selectors.catalog(), many=True).data)


class StockApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: StockItemOutput(many=True), 403: STAFF_ONLY},
                   summary="The staff stock board: on hand, reserved and available per product")
    def get(self, request):
        return Response(StockItemOutput([stock_item_document(item) for item in selectors.catalog()], many=True).data)


class DashboardApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: DashboardOutput, 403: STAFF_ONLY},
                   summary="The operations dashboard: orders per status, outboxes, throughput")
    def get(self, request):
        return Response(DashboardOutput(selectors.dashboard_document()).data)


class SalesApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(parameters=[SalesQuery], responses={200: SalesDayOutput(many=True), 403: STAFF_ONLY},
                   summary="Sales per product per day (staff)")
    def get(self, request):
        query = SalesQuery(data=single_valued(request.query_params))
        query.is_valid(raise_exception=True)
        return Response(SalesDayOutput(selectors.sales_by_day(days=query.validated_data["days"]), many=True).data)


class OrderPageApi(APIView):
    @extend_schema(responses={200: OrderPageOutput, 404: NOT_YOURS},
                   summary="Page: one of your orders with its timeline and its products' live availability")
    def get(self, request, order_id: UUID):
        summary = _own_order(request, order_id)
        products = selectors.products(skus=[line["sku"] for line in summary.lines])
        page = {"order": order_document(summary, {item.sku: item for item in products}),
                "products": [catalog_item_document(item) for item in products]}
        return Response(OrderPageOutput(page).data)


class ShopPageApi(APIView):
    @extend_schema(responses=ShopPageOutput, summary="Page: the catalog and your recent orders")
    def get(self, request):
        page = {"catalog": [catalog_item_document(item) for item in selectors.catalog()],
                "recent_orders": selectors.order_documents_for_customer(customer_id=request.user.id, limit=10)}
        return Response(ShopPageOutput(page).data)
