"""A message as it came off the wire: its exact bytes and the properties that say what it
claims to be, and how to show any of it to people.

Nothing here trusts the message. ``Received.of`` never raises for anything a producer can
send; ``preview`` and ``storable`` turn any bytes or text into text that every database
stores (PostgreSQL refuses NUL in ``text`` and lone surrogates are not Unicode), bounded
in size, with NULs and undecodable bytes made visible instead of dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# Properties worth keeping with a dead letter besides the application headers: who sent
# it, and whether the broker already tried to deliver it.
_PROPERTIES = ("message_id", "correlation_id", "app_id", "type", "user_id")
_MAX_HEADERS = 32
_MAX_HEADER_CHARS = 256


@dataclass(frozen=True)
class Received:
    """What a consumer was handed: ``body`` exactly as the producer sent it."""

    body: bytes
    content_type: str = ""
    content_encoding: str = ""
    routing_key: str = ""
    # As the broker gave them: only a dead letter keeps them, so they are made storable
    # (``headers``) only then, not for every message.
    raw_headers: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, body: bytes | str | None, *, content_type: str | None = None, content_encoding: str | None = None,
           routing_key: str | None = None, headers: dict | None = None) -> Received:
        return cls(
            body=wire_bytes(body, content_encoding),
            content_type=storable(content_type or "", 200),
            content_encoding=storable(content_encoding or "", 64),
            routing_key=storable(routing_key or "", 200),
            raw_headers=headers or {},
        )

    @cached_property
    def headers(self) -> dict[str, str]:
        """Storable strings only (see ``storable``), bounded in number and length."""
        return _storable_headers(self.raw_headers)

    @classmethod
    def from_kombu(cls, message) -> Received:
        properties = getattr(message, "properties", None) or {}
        delivery_info = getattr(message, "delivery_info", None) or {}
        headers: dict[str, Any] = {name: properties[name] for name in _PROPERTIES if properties.get(name)}
        for name in ("exchange", "redelivered"):
            if name in delivery_info:
                headers[name] = delivery_info[name]
        headers.update(getattr(message, "headers", None) or {})
        return cls.of(message.body, content_type=message.content_type, content_encoding=message.content_encoding,
                      routing_key=delivery_info.get("routing_key"), headers=headers)


def wire_bytes(body: bytes | str | None, encoding: str | None = None) -> bytes:
    """The bytes the producer sent. py-amqp hands over text when it could decode the body
    with its declared ``content_encoding``; encoding it back with the same codec gives the
    same bytes."""
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    try:
        return body.encode(encoding or "utf-8", errors="surrogateescape")
    except (LookupError, UnicodeError):
        return body.encode("utf-8", errors="surrogatepass")


def preview(data: bytes | str, limit: int) -> str:
    """At most ``limit`` bytes of ``data`` as storable text, saying how much was left out."""
    raw = wire_bytes(data)
    text = _visible(raw[:limit].decode("utf-8", errors="backslashreplace"))
    if len(raw) > limit:
        text += f"\n… ({len(raw) - limit:,} more bytes; {len(raw):,} in all)"
    return text


def storable(text: str, limit: int | None = None) -> str:
    """``text`` with NULs and lone surrogates made visible, cut to ``limit`` characters."""
    text = _visible(text.encode("utf-8", errors="backslashreplace").decode("utf-8"))
    return text if limit is None else text[:limit]


def _visible(text: str) -> str:
    # Other control characters are valid text everywhere; NUL is the one PostgreSQL refuses.
    return text.replace("\x00", "\\x00")


def _storable_headers(headers: dict) -> dict[str, str]:
    kept = {}
    for name, value in list(headers.items())[:_MAX_HEADERS]:
        shown = value if isinstance(value, str) else repr(value)
        kept[storable(str(name), _MAX_HEADER_CHARS)] = storable(shown, _MAX_HEADER_CHARS)
    return kept
