"""JSON from outside, with limits: the one decoder for bodies that arrive over the bus, the
API and WebSocket frames.

``json.loads`` alone accepts what the rest of the platform cannot survive: nesting deep
enough to raise ``RecursionError`` (which is not a ``ValueError``), bodies of any size,
strings that PostgreSQL refuses to store (``\\u0000``, lone surrogates such as ``\\ud800``,
which are not Unicode text), and numbers that are not JSON and that ``jsonb`` refuses too
(``NaN``, ``Infinity``, ``1e999``, which overflows to infinity). ``loads`` refuses each of
them with a reason, as a ``JSONRefused`` (a ``ValueError``, so code that already catches
malformed JSON keeps working), and ``too_large`` tells a 413 or close code 1009 from a 400 or 1007.

Checked after parsing, in a loop rather than recursion; the walk over the value runs only
when a cheap look at the text says a limit may be near, so the common small, flat
message pays for one ``json.loads`` and a search or two.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_DEPTH = 32

# The escapes that can put NUL or a surrogate into valid JSON text (raw control characters
# are malformed JSON already). Only these: ``json.dumps`` writes every non-ASCII character
# as a ``\\u`` escape, and "Café" must not cost the walk.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class JSONRefused(ValueError):
    def __init__(self, reason: str, *, too_large: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def loads(data: bytes | bytearray | str, *, max_bytes: int | None = None,
          max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode ``data`` (UTF-8 bytes or text) or raise ``JSONRefused``.

    ``max_bytes``: the size limit, counted before decoding; ``max_depth``: how many arrays
    and objects may nest (a flat object is depth 1)."""
    size = len(data)
    if max_bytes is not None and size > max_bytes:
        raise JSONRefused(f"body of {size} bytes is over the limit of {max_bytes}", too_large=True)
    if isinstance(data, str):
        text = data
    else:
        # Strictly, before json.loads sees it: given bytes, json.loads guesses UTF-16 or
        # UTF-32 and decodes with "surrogatepass", which lets an encoded lone surrogate,
        # or a NUL in UTF-16, through without an escape to look for.
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONRefused(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JSONRefused:
        raise
    except RecursionError:
        raise JSONRefused(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONRefused(f"malformed JSON: {exc}") from None
    # A raw lone surrogate can only be in a str given to us: bytes were decoded strictly.
    if _may_exceed_limits(text, max_depth, raw_surrogates=isinstance(data, str)):
        _check(value, max_depth)
    return value


def _refuse_constant(name: str) -> float:
    raise JSONRefused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"number {text[:40]} overflows to infinity")
    return value


def _may_exceed_limits(text: str, max_depth: int, *, raw_surrogates: bool) -> bool:
    if _RISKY_ESCAPE.search(text) or (raw_surrogates and not _is_unicode(text)):
        return True
    return text.count("[") + text.count("{") > max_depth


def _check(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, (dict, list)):
            depth += 1
            if depth > max_depth:
                raise JSONRefused(f"JSON nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth))
            else:
                stack.extend((child, depth) for child in item)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise JSONRefused("a string contains the NUL character (\\u0000), which cannot be stored")
    if not _is_unicode(text):
        raise JSONRefused("a string contains a lone surrogate (e.g. \\ud800), which is not Unicode text")
