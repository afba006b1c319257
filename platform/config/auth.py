"""Signing in for API clients: DRF's token view, throttled per client address so nobody
can guess passwords at speed (429 with Retry-After)."""

from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import ScopedRateThrottle


class TokenObtainView(ObtainAuthToken):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"
