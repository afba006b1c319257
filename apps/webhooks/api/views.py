"""Webhook endpoints of the signed-in user. Another user's endpoint is a 404, never its data."""

from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors, services
from .serializers import (
    WebhookDeliveryOutput,
    WebhookEndpointCreatedOutput,
    WebhookEndpointOutput,
    WebhookEndpointRegisterInput,
)

NOT_YOURS = OpenApiResponse(description="No such endpoint of yours")
TAGS = ["webhooks"]


def _endpoint_or_404(request, endpoint_id: UUID):
    endpoint = selectors.webhook_endpoint_for_owner(endpoint_id=endpoint_id, owner_id=request.user.id)
    if endpoint is None:
        raise NotFound("No such webhook endpoint.")
    return endpoint


class WebhookEndpointListApi(APIView):
    @extend_schema(responses=WebhookEndpointOutput(many=True), tags=TAGS, summary="Your webhook endpoints")
    def get(self, request):
        endpoints = selectors.webhook_endpoints_for_owner(owner_id=request.user.id)
        return Response(WebhookEndpointOutput(endpoints, many=True).data)

    @extend_schema(
        request=WebhookEndpointRegisterInput, tags=TAGS,
        responses={201: WebhookEndpointCreatedOutput,
                   400: OpenApiResponse(description="Field errors: url policy, unknown or staff-only event types")},
        summary="Register an endpoint; the answer holds its signing secret, shown this once",
    )
    def post(self, request):
        data = WebhookEndpointRegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            endpoint = services.webhook_endpoint_register(
                owner_id=request.user.id, owner_is_staff=request.user.is_staff, **data.validated_data)
        except services.WebhookError as refused:
            raise ValidationError({refused.field: [refused.message]}) from None
        return Response(WebhookEndpointCreatedOutput(endpoint).data, status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/v1/webhooks/{endpoint.id}/"})


class WebhookEndpointDetailApi(APIView):
    @extend_schema(responses={200: WebhookEndpointOutput, 404: NOT_YOURS}, tags=TAGS,
                   summary="One of your webhook endpoints")
    def get(self, request, endpoint_id: UUID):
        return Response(WebhookEndpointOutput(_endpoint_or_404(request, endpoint_id)).data)

    @extend_schema(responses={204: None, 404: NOT_YOURS}, tags=TAGS,
                   summary="Delete an endpoint: nothing more is sent to it")
    def delete(self, request, endpoint_id: UUID):
        services.webhook_endpoint_delete(endpoint=_endpoint_or_404(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListApi(APIView):
    @extend_schema(responses={200: WebhookDeliveryOutput(many=True), 404: NOT_YOURS}, tags=TAGS,
                   summary="An endpoint's latest deliveries (100), newest first")
    def get(self, request, endpoint_id: UUID):
        deliveries = selectors.webhook_deliveries_of(endpoint=_endpoint_or_404(request, endpoint_id))[:100]
        return Response(WebhookDeliveryOutput(deliveries, many=True).data)
