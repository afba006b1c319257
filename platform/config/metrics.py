"""``/metrics``: this web process's Prometheus figures (``waybill.metrics``), for staff and
scrapers only.

Let in, in this order:

- ``Authorization: Bearer <WAYBILL_METRICS_TOKEN>``, when that setting is set: a scraper
  that has no user (compared in constant time);
- ``Authorization: Token <key>``: the API's token (DRF's, as ``POST /api/v1/auth/token/``
  hands out) of a staff user;
- a signed-in staff user's session (the admin's).

Anyone else is refused: no credentials, or wrong ones, 401 with ``WWW-Authenticate``; a
user who is not staff, 403. The figures name the platform's contexts, consumers and
message types and how busy each one is: nothing a customer needs. A scraper that cannot
hold a secret scrapes ``WAYBILL_METRICS_ADDR`` instead, on a private address.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from waybill import metrics


@require_safe
def metrics_page(request: HttpRequest) -> HttpResponse:
    if (refusal := _refusal(request)) is not None:
        return refusal
    body, content_type = metrics.exposition(request.headers.get("Accept"))
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def _refusal(request: HttpRequest) -> HttpResponse | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        expected = settings.WAYBILL_METRICS_TOKEN
        if expected and hmac.compare_digest(credentials.strip().encode(), expected.encode()):
            return None
        return _unauthorized("That bearer token is not this platform's metrics token.")
    try:
        # Reads the Authorization header alone (None without a Token one), so a plain
        # Django request will do.
        authenticated = TokenAuthentication().authenticate(request)
    except AuthenticationFailed as failed:
        return _unauthorized(str(failed.detail))
    user = authenticated[0] if authenticated else request.user
    if not user.is_authenticated:
        return _unauthorized("Sign in as staff, or send a staff user's API token.")
    if not user.is_staff:
        return HttpResponse("Metrics are for staff.\n", status=403, content_type="text/plain")
    return None


def _unauthorized(reason: str) -> HttpResponse:
    response = HttpResponse(f"{reason}\n", status=401, content_type="text/plain")
    # The API's scheme, and the scraper's where a metrics token is set.
    challenges = ['Token realm="waybill"']
    if settings.WAYBILL_METRICS_TOKEN:
        challenges.append('Bearer realm="waybill metrics"')
    response["WWW-Authenticate"] = ", ".join(challenges)
    return response
