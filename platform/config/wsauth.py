"""Who may open a WebSocket, and as whom: the Origin check and the two ways to sign in.

- A browser sends its session cookie, and always an ``Origin`` header: it must be one of
  ``ALLOWED_HOSTS`` (Channels' ``AllowedHostsOriginValidator`` rules), or any page on the
  web could open a socket with the visitor's cookie (cross-site WebSocket hijacking).
- An API client sends ``Authorization: Token <key>`` (DRF's tokens) in the handshake.
  Tokens in the URL are never read: URLs end up in logs, proxies and browser history.

A handshake without ``Origin`` comes from something that is not a browser. Channels'
``OriginValidator`` refuses a missing Origin unless "*" is allowed; we keep that for cookies
(a cookie alone, without the Origin that proves which page sent it, is not enough), but a
token header may connect without Origin: a web page cannot set headers on a WebSocket
handshake, so a token header is never something a browser attached on a stranger's behalf.
A present but foreign Origin is refused whatever the credentials.

The consumer sees ``scope["user"]``: the token's user, the session's user, or anonymous
(an unknown or inactive token: it closes with 4401 then).
"""

from __future__ import annotations

from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.contrib.auth.models import AnonymousUser


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


def _token_key(authorization: bytes | None) -> str | None:
    """The key of an ``Authorization: Token <key>`` header ("" if the key is missing);
    ``None`` when there is no header or it uses another scheme."""
    if authorization is None:
        return None
    scheme, _, key = authorization.decode("latin1").strip().partition(" ")
    if scheme.lower() != "token":
        return None
    return key.strip()


@database_sync_to_async
def _token_user(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first() if key else None
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class WebSocketGate:
    """ASGI middleware in front of the WebSocket router (see the module docstring)."""

    def __init__(self, router):
        self.router = router
        self.by_session = AuthMiddlewareStack(router)
        # Used for its origin rules only (its ``valid_origin``), read from settings once.
        self.origins = AllowedHostsOriginValidator(router)

    async def __call__(self, scope, receive, send):
        origin = _header(scope, b"origin")
        if origin is not None and not self.origins.valid_origin(_parse(origin)):
            return await WebsocketDenier()(scope, receive, send)
        key = _token_key(_header(scope, b"authorization"))
        if key is not None:
            return await self.router({**scope, "user": await _token_user(key)}, receive, send)
        if origin is None:
            return await WebsocketDenier()(scope, receive, send)
        return await self.by_session(scope, receive, send)


def _parse(origin: bytes):
    try:
        return urlparse(origin.decode("latin1"))
    except ValueError:
        return None
