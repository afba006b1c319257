"""Filters of the operations console's pages (``waybill.console_admin``)."""

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration(value) -> str:
    """A timedelta (or seconds) as people read it: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    if value is None or value == "":
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    if seconds < 3600:
        return f"{sign}{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{sign}{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{sign}{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


@register.filter
def indent(depth) -> str:
    return "\u2003" * int(depth or 0)


@register.filter
def after(later, earlier) -> str:
    """How long after ``earlier`` ``later`` came: ``+120 ms``."""
    if later is None or earlier is None:
        return ""
    return f"+{duration(later - earlier)}"
