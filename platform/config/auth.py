"""Signing in, for API clients (DRF's token view) and browsers (Django's login form):
both throttled per client address under one budget (the ``auth`` scope), so nobody can
guess passwords at speed by switching door (429 with Retry-After)."""

import math

from django.contrib.auth.views import LoginView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.throttling import ScopedRateThrottle

from .api import BoundedJSONParser


class TokenObtainView(ObtainAuthToken):
    # DRF's view names its own parsers, JSONParser among them: the bounded one instead.
    parser_classes = (FormParser, MultiPartParser, BoundedJSONParser)
    # Signing in takes a username and password, never a token or a session: none is read
    # (a stale token would otherwise be a 401 before the password is looked at), and the
    # schema says the operation needs no credentials.
    authentication_classes = ()
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"


class ThrottledLoginView(LoginView):
    """Django's login form, counted against the same per-address budget as the token
    view. DRF's throttle works on a plain Django request (it reads only ``META``), and it
    knows the gateway's forwarded address (NUM_PROXIES), so it is reused here rather than
    adding a second rate limiter."""

    throttle_scope = "auth"

    def post(self, request, *args, **kwargs):
        throttle = ScopedRateThrottle()
        if not throttle.allow_request(request, self):
            retry_after = math.ceil(throttle.wait() or 1)
            response = self.render_to_response(
                {**self.get_context_data(), "throttled_seconds": retry_after}, status=429)
            response["Retry-After"] = str(retry_after)
            return response
        return super().post(request, *args, **kwargs)
