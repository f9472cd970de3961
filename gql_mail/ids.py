"""Identifiers that sort by creation time (like UUIDv7), so new rows land at the end of their indexes."""

from __future__ import annotations

import os
import time


def time_ordered_id() -> str:
    millis = time.time_ns() // 1_000_000
    return f"{millis:012x}{os.urandom(6).hex()}"
