"""Why a message failed, in a form that groups: the kind of failure, the exception's type,
and the error's text with what varies from one message to the next (ids, numbers, quoted
values) taken out. One cause, whatever the message, gives one fingerprint, so the console
lists a thousand dead letters of one bug as one group (``waybill.console``).

The kinds, from what the consumer says when it gives a message up (``waybill.consumer``):

- ``refused``: it could not be read (content type or encoding, not JSON, too large or deep,
  a broken envelope, an unknown type or version, an invalid payload, a failed upcast);
- ``no_handler``: read, but this consumer handles no such type;
- ``permanent``: its handler said no retry can help (``PermanentFailure``);
- ``gave_up``: its handler kept raising, and the retries ran out;
- ``unhandled``: the consumer itself failed on it (a bug of the platform, not the handler).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

KINDS = ("refused", "no_handler", "permanent", "gave_up", "unhandled")

_GAVE_UP = re.compile(r"^gave up after \d+ attempts: ")
# Without the exception (a reason stored before the kinds were): "Name: text", or the
# consumer's "IntegrityError in handler".
_EXCEPTION = re.compile(r"^([A-Z]\w*)(?=: | in handler$)")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]{0,40}$")
# What varies between messages of one cause, most specific first. Kept: an HTTP status
# (a 401 and a 404 are two causes) and a quoted word that names something (a field, a
# type: KeyError 'amount' is not KeyError 'currency').
_VARYING = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    # A value the validator quotes back (pydantic's input_value=...): data, whatever it looks like.
    (re.compile(r"input_value=(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,\]\s]+)"), "input_value=…"),
    (re.compile(r"'(?:[^'\\]|\\.){0,200}'|\"(?:[^\"\\]|\\.){0,200}\""), lambda quoted: (
        quoted.group() if _NAME.match(quoted.group()[1:-1]) else f"{quoted.group()[0]}…{quoted.group()[0]}")),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\b(?![1-5]\d\d\b)\d+(?:\.\d+)?\b"), "<n>"),
)


@dataclass(frozen=True)
class Failure:
    kind: str
    error_type: str  # the exception's class name, when an exception was the cause
    error: str  # the error's own text, as the reason gives it

    @classmethod
    def of(cls, reason: str, *, error: BaseException | None = None) -> Failure:
        """The failure a consumer's reason describes (its wording is the consumer's, so this
        is the one place that reads it); ``error`` is the exception, when there was one. A
        reason read without its exception (the migration of older dead letters) gives the
        same failure as with it."""
        if reason.startswith("permanent failure: "):
            return cls("permanent", type(error).__name__ if error else "PermanentFailure",
                       reason.removeprefix("permanent failure: "))
        if _GAVE_UP.match(reason):
            return cls("gave_up", *_exception_and_text(_GAVE_UP.sub("", reason), error))
        for prefix in ("could not be handled: ", "could not be retried: "):
            if reason.startswith(prefix):
                return cls("unhandled", *_exception_and_text(reason.removeprefix(prefix), error))
        if " has no handler for " in reason:
            return cls("no_handler", "", reason)
        return cls("refused", "", reason)

    def fingerprint(self, message_type: str) -> str:
        """Equal for failures of one cause: kind, exception type, message type and the error
        text normalised (``normalised``). Changing how it is computed splits each group into
        its older and newer dead letters: give the change a migration that fingerprints the
        stored ones again (``models.dead_letter_causes_operations``)."""
        key = "\x1f".join((self.kind, self.error_type, message_type, normalised(self.error)))
        return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:20]


def normalised(text: str) -> str:
    """``text`` with what varies between messages replaced by placeholders, whitespace
    collapsed and cut to a bounded length: e.g. ``order 9b1c… has 3 lines`` and ``order
    77aa… has 5 lines`` both become ``order <id> has <n> lines``."""
    text = text[:2000]
    for pattern, placeholder in _VARYING:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())[:500]


def _exception_and_text(text: str, error: BaseException | None) -> tuple[str, str]:
    """The exception's name and the error's own text, as the consumer wrote them: "Name: text"."""
    name = type(error).__name__ if error is not None else (found.group(1) if (found := _EXCEPTION.match(text)) else "")
    return name, text.removeprefix(f"{name}: ") if name else text
