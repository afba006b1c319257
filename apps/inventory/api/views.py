"""Staff-only stock API. Views validate input and call services; nothing else."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import ledger, selectors, services
from .serializers import ProductCreateInput, ProductOutput, ProductUpdateInput, StockLedgerOutput


class ProductListCreateApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=ProductOutput(many=True), summary="List products with stock (staff)")
    def get(self, request):
        return Response(ProductOutput(selectors.product_list(), many=True).data)

    @extend_schema(request=ProductCreateInput, responses={201: ProductOutput}, summary="Create a product (staff)")
    def post(self, request):
        data = ProductCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            product = services.product_create(**data.validated_data)
        except services.StockError as refused:
            raise ValidationError({"sku": [str(refused)]}) from None
        return Response(ProductOutput(product).data, status=status.HTTP_201_CREATED)


class ProductDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=ProductOutput, summary="One product with stock (staff)")
    def get(self, request, sku: str):
        product = selectors.product_get(sku=sku)
        if product is None:
            raise NotFound(f"No product with SKU {sku}.")
        return Response(ProductOutput(product).data)

    @extend_schema(request=ProductUpdateInput, responses=ProductOutput,
                   summary="Change stock on hand, name or price (staff)")
    def patch(self, request, sku: str):
        data = ProductUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        if selectors.product_get(sku=sku) is None:
            raise NotFound(f"No product with SKU {sku}.")
        try:
            product = services.product_update(sku=sku, **data.validated_data)
        except services.StockError as refused:
            raise ValidationError({"on_hand": [str(refused)]}) from None
        return Response(ProductOutput(product).data)


class ProductLedgerApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=StockLedgerOutput, summary="A product's stock ledger (staff)")
    def get(self, request, sku: str):
        if selectors.product_get(sku=sku) is None:
            raise NotFound(f"No product with SKU {sku}.")
        stock = ledger.fold(sku)
        return Response(StockLedgerOutput({"sku": sku, "on_hand": stock.on_hand, "reserved": stock.reserved,
                                           "version": stock.version, "entries": ledger.entries_of(sku)}).data)
