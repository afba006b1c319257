"""One POST of a webhook, and nothing else: no database here, so the sender can run many
at once outside any transaction.

Two guards, both here because only the moment of sending counts:

- Where it goes (SSRF): the host is resolved now and every address it resolves to must be
  public (or, where ``WAYBILL_WEBHOOK_ALLOW_LOOPBACK`` is on, loopback). The connection
  goes to the address we checked, never to a second lookup, so a name that changes its
  answer between check and connect (DNS rebinding) cannot point us inside the network.
  For https the certificate is still checked against the hostname (SNI and verification
  use it, not the address).
- How long it takes: ``WAYBILL_WEBHOOK_TIMEOUT_SECONDS`` bounds the whole POST, not each
  read; a watchdog shuts the socket at the deadline, so a receiver trickling bytes cannot
  hold a sender. At most ``MAX_RESPONSE_BYTES`` of the answer are read.

What the owner may see of a failure is only ``Outcome.error``, a class ("timeout", "HTTP
500", ...). ``Outcome.detail`` (the exception, the start of the body) is for staff, in the
admin: it could otherwise show an integrator what some host answered us."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import httpx
from django.conf import settings
from django.utils import timezone

from . import signing

USER_AGENT = "Waybill-Webhooks/1"
MAX_RESPONSE_BYTES = 1024
DETAIL_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    started_at: datetime
    response_ms: int
    status_code: int | None = None
    error: str = ""  # a class of failure, safe to show the endpoint's owner; "" on success
    detail: str = ""  # for staff only

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Refused(Exception):
    """The URL's host resolves to an address we do not send to."""


def loopback_allowed() -> bool:
    value = settings.WAYBILL_WEBHOOK_ALLOW_LOOPBACK
    return settings.DEBUG if value is None else value


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: an IPv4 address in its last 32 bits


def unwrapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 one stands for (``::ffff:10.0.0.1``, ``64:ff9b::a00:1``), or
    itself: a mapped address reaches the IPv4 host, so it is judged as that host."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def public_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """One host on the public internet. ``is_global`` alone lets multicast through
    (224.0.0.0/4 and ff00::/8 count as global)."""
    address = unwrapped(address)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Where a delivery may connect; registration (services._url_check) asks the same."""
    if unwrapped(address).is_loopback:
        return loopback_allowed()
    return public_unicast(address)


def resolve(host: str, port: int) -> str:
    """The address to connect to: every address ``host`` resolves to must be allowed
    (one private answer among public ones refuses the lot: we cannot choose for the
    resolver). Raises ``Refused`` or ``socket.gaierror``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise socket.gaierror(f"{host} resolves to nothing")
    if refused := [a for a in addresses if not address_allowed(ipaddress.ip_address(a.split("%", 1)[0]))]:
        raise Refused(f"{host} resolves to {', '.join(refused)}")
    return addresses[0]


@cache
def _client() -> httpx.Client:
    # One client per process (one SSL context). No keep-alive: each POST connects to the
    # address checked for it, and a pooled connection (keyed by address) must never carry
    # a request for another hostname than the one its certificate was checked for.
    # Redirects are not followed: a 3xx is a failure, never a hop to another host.
    return httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT},
                        limits=httpx.Limits(max_keepalive_connections=0))


class _Watchdog:
    """Shuts the POST's socket at the deadline, whatever phase it is in: httpx's timeouts
    bound each read, never the sum of them."""

    def __init__(self, seconds: float):
        self.fired = False
        self._socket = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def trace(self, name: str, info: dict) -> None:
        # httpcore's trace hook: connect_tcp and start_tls hand over the stream they made.
        stream = info.get("return_value") if name.endswith(".complete") else None
        if stream is not None and hasattr(stream, "get_extra_info"):
            with self._lock:
                self._socket = stream.get_extra_info("socket")
                if self.fired:
                    self._shut()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the POST ended on its own

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def post(*, url: str, secret: str, delivery_id: str, body: bytes) -> Outcome:
    """POST ``body`` signed for this attempt, within the total deadline. Only 2xx counts
    as delivered; any other answer, a refused address, a timeout or a network error is a
    failure to retry."""
    started_at = timezone.now()
    start = time.perf_counter()
    timeout = settings.WAYBILL_WEBHOOK_TIMEOUT_SECONDS
    target = httpx.URL(url)
    host = target.host
    try:
        address = resolve(host, target.port or (443 if target.scheme == "https" else 80))
    except Refused as exc:
        return Outcome(started_at, _ms(start), error="address not allowed", detail=str(exc))
    except (OSError, UnicodeError) as exc:
        return Outcome(started_at, _ms(start), error="name not resolved", detail=_text(exc))
    headers = {"Content-Type": "application/json", "Host": target.netloc.decode("ascii"),
               **signing.headers_for(secret=secret, delivery_id=delivery_id, body=body)}
    with _Watchdog(timeout) as watchdog:
        try:
            request = _client().build_request(
                "POST", target.copy_with(host=address), content=body, headers=headers, timeout=timeout,
                extensions={"sni_hostname": host, "trace": watchdog.trace})
            response = _client().send(request, stream=True)
            try:
                head = _read_head(response)
            finally:
                response.close()
        except Exception as exc:  # noqa: BLE001 - a socket shut under httpx may raise anything
            error = "timeout" if watchdog.fired or isinstance(exc, httpx.TimeoutException) else _classify(exc)
            return Outcome(started_at, _ms(start), error=error, detail=_text(exc))
    elapsed = _ms(start)
    if watchdog.fired:
        return Outcome(started_at, elapsed, error="timeout", detail="deadline passed while reading the answer")
    if 200 <= response.status_code < 300:
        return Outcome(started_at, elapsed, response.status_code)
    return Outcome(started_at, elapsed, response.status_code, error=f"HTTP {response.status_code}",
                   detail=head.decode("utf-8", "replace")[:DETAIL_CHARS])


def _read_head(response: httpx.Response) -> bytes:
    """At most MAX_RESPONSE_BYTES of the answer: nobody needs more, and a huge body must
    not cost us the memory."""
    head = b""
    for chunk in response.iter_raw(MAX_RESPONSE_BYTES):
        head += chunk
        if len(head) >= MAX_RESPONSE_BYTES:
            break
    return head[:MAX_RESPONSE_BYTES]


def _classify(exc: Exception) -> str:
    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(exc).lower():
        return "connection refused"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "certificate" in str(exc).lower():
        return "TLS error"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "invalid response"
    return "network error"


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)
