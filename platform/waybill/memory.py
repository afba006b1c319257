"""Giving memory that nothing uses any more back to the operating system.

After 2,500 live connections closed, the embedded platform stayed about 130 MB above where
it started (bench/connections), yet tracemalloc counted about 1 MB more live Python
objects than before the burst: the rest was free memory the allocators keep for reuse.
glibc's ``malloc_trim`` hands back the free pages of every malloc arena (about a quarter
of it here); what remains are CPython's own 1 MiB object arenas, freed only when every
object in one is gone, so a few long-lived objects made during the burst keep theirs.

Cheap enough after a burst (milliseconds), too dear per request: callers decide when.
A no-op where the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def memory_release() -> bool:
    """Return free heap memory to the system; True if the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
