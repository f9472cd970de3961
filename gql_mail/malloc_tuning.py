"""Make the C allocator give big buffers back to the system once they are freed.

A big message passes through buffers of its size (the request body, the decoded attachment, the composed
bytes, SQLite's copy of the row, the DATA text). CPython asks `malloc` for every object over 512 bytes,
and glibc's malloc serves a request from `mmap` (given back at `free`) only above its mmap threshold,
which starts at 128 KiB but rises to the size of each mmapped block that is freed, up to 32 MiB. So after
the first big message, the next ones' buffers come from the heap, and a heap shrinks only from its top:
one small live object above them keeps the freed megabytes in the RSS (measured: a server stayed 164 MB
above idle after one 10 MB attachment was delivered). Setting the thresholds explicitly turns that
adjustment off: buffers of `MMAP_THRESHOLD` and more are always mapped and unmapped, and a heap with more
than `TRIM_THRESHOLD` free at its top is trimmed.

That leaves what a big message scatters in smaller pieces (SQLite's pages, the many objects of a parse):
freed, but in the middle of a heap, where only `malloc_trim` finds them (measured: 40 MB of the 71 MB a
server still held after one 10 MB attachment). `release_after(size)` asks for one trim a moment after a
big message, when the request's and the delivery's buffers are gone; it costs a few milliseconds, and
small messages never ask for it.

This relies on glibc (`mallopt`, `malloc_trim` and the parameter numbers of malloc.h); elsewhere (musl,
macOS) it does nothing. Process-wide, so `serve` calls `tune_malloc`, not the app factory that tests call
many times.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from functools import cache

__all__ = [
    "BIG_MESSAGE",
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "release_after",
    "release_free_memory",
    "tune_malloc",
]

_log = logging.getLogger(__name__)

# malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# glibc's own starting values; fixed here so that they no longer rise. A mapping costs two system calls
# and zeroed pages, which buffers this size amortise.
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 128 * 1024
# A message this big or bigger is followed by a trim, RELEASE_DELAY seconds later.
BIG_MESSAGE = 1024 * 1024
RELEASE_DELAY = 1.0

# The pending release, if any: malloc's heap is the process's, and so is this.
_pending: list[asyncio.TimerHandle] = []


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None  # not glibc
    return libc


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring); whether they were set."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not done:
        _log.warning("mallopt refused the mmap/trim thresholds; big messages may keep memory")
    return done


def release_free_memory() -> bool:
    """`malloc_trim(0)`: the free pages of every arena go back to the system; whether it ran."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def release_after(size: int) -> None:
    """A message of `size` bytes went through: if it is big, `release_free_memory` RELEASE_DELAY seconds
    from now on the running loop, after a full collection. At most one is pending, so a stream of big
    messages gets one a second (what they leave behind stays bounded) and the last one's comes after it
    (a submission's may fall while its delivery holds the message; the delivery asks again). Call on the
    loop."""
    if size < BIG_MESSAGE or _pending:
        return

    def release() -> None:
        _pending.clear()
        # First the cycles: `serve` makes the collector rare (cli._settle_garbage_collector), and objects
        # of a request or a delivery that sit in reference cycles keep its big buffers alive until it runs
        # (measured: 40 MB after a 10 MB attachment; 320 MB after 40 x 2 MB).
        gc.collect()
        release_free_memory()

    _pending.append(asyncio.get_running_loop().call_later(RELEASE_DELAY, release))
