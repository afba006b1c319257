"""The API's edges: what comes in is bounded, what goes out under ``/api/`` is JSON.

- ``BoundedJSONParser`` (DRF's default parser): a body over ``WAYBILL_REQUEST_MAX_BYTES``
  is a 413, JSON nested deeper than ``WAYBILL_JSON_MAX_DEPTH`` (or holding text the
  databases cannot store) a 400, both ``{"detail": ...}`` naming the limit. DRF's own
  parser hands ``json.load`` the raw stream: no size limit at all, and a ``RecursionError``
  (not a ``ValueError``) on deep nesting, which was a 500.
- ``api_json_errors`` (the outermost middleware): an error under ``/api/`` that is not JSON
  already (Django's 404 and 500 pages, its debug page when ``DEBUG`` is on, the 400 of a
  form body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``) becomes ``{"detail": "<reason phrase>"}``
  with the same status. An API client never parses HTML, and an anonymous one must never
  see a traceback or the settings. The original error is logged by Django as usual. A
  database that does not answer is a 503 with ``Retry-After``, not a 500: nothing was
  committed, and the client may send the same request again.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from waybill import jsonlimits

log = logging.getLogger(__name__)
API_PREFIX = "/api/"
DATABASE_UNAVAILABLE = "A database did not answer; nothing was done. Send the request again shortly."
DATABASE_RETRY_AFTER_SECONDS = 5
# Headers of an error that tell the client what to do next; kept when the body is replaced.
_KEPT_HEADERS = ("Retry-After", "WWW-Authenticate", "Allow")


def too_large_detail() -> str:
    return f"Request body over the limit of {settings.WAYBILL_REQUEST_MAX_BYTES} bytes (WAYBILL_REQUEST_MAX_BYTES)."


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.WAYBILL_REQUEST_MAX_BYTES
        # One byte past the limit is enough to know; never read a huge body into memory.
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise RequestTooLarge(too_large_detail())
        try:
            return jsonlimits.loads(data, max_depth=settings.WAYBILL_JSON_MAX_DEPTH)
        except jsonlimits.JSONRefused as refused:
            raise ParseError(f"JSON parse error - {refused.reason} (WAYBILL_JSON_MAX_DEPTH="
                             f"{settings.WAYBILL_JSON_MAX_DEPTH}).") from None


def is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


def json_error(status_code: int, detail: str | None = None, *, headers=None) -> JsonResponse:
    response = JsonResponse({"detail": detail or HTTPStatus(status_code).phrase}, status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _as_json(request, response):
    if response.status_code < 400 or not is_api(request):
        return response
    if response.get("Content-Type", "").split(";")[0].strip().endswith(("/json", "+json")):
        return response
    kept = {name: response[name] for name in _KEPT_HEADERS if response.has_header(name)}
    return json_error(response.status_code, headers=kept)


def _api_exception(request, exception):
    if not is_api(request):
        return None
    # A form body (the token endpoint takes forms too) over DATA_UPLOAD_MAX_MEMORY_SIZE,
    # raised in the view: Django would answer 400, but the size is the client's problem.
    if isinstance(exception, RequestDataTooBig):
        return json_error(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, too_large_detail())
    # A database that does not answer (restarting, failing over, out of connections) or a
    # transient conflict (deadlock, serialization): nothing was committed, so the same
    # request may simply be sent again, with the same Idempotency-Key where it has one.
    if isinstance(exception, (OperationalError, InterfaceError)):
        log.warning("%s %s: database unavailable: %s", request.method, request.path, exception)
        return json_error(status.HTTP_503_SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE,
                          headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    return None


@sync_and_async_middleware
def api_json_errors(get_response):
    # Both modes, so an ASGI request takes no thread hop through here.
    if iscoroutinefunction(get_response):
        async def middleware(request):
            return _as_json(request, await get_response(request))
    else:
        def middleware(request):
            return _as_json(request, get_response(request))
    middleware.process_exception = _api_exception
    return middleware


def bad_request(request, exception, template_name=defaults.ERROR_400_TEMPLATE_NAME):
    """``handler400``: a body over the limit is a 413 (the sign-in form reads it in the CSRF
    check, before any view, so ``process_exception`` never sees it); anything else is
    Django's 400."""
    if isinstance(exception, RequestDataTooBig):
        if is_api(request):
            return json_error(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, too_large_detail())
        return HttpResponse(too_large_detail(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            content_type="text/plain")
    return defaults.bad_request(request, exception, template_name)

