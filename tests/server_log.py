"""The log of an in-process test server, kept whole (tracebacks included) for tests that check that an
attack leaves no traceback behind."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# uvicorn's loggers do not propagate to the root when uvicorn configured them; listen to them directly.
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def server_log() -> Iterator[list[str]]:
    """Every record logged (at WARNING and above) while the block runs, formatted with its traceback."""
    keep = _Keep()
    keep.setLevel(logging.WARNING)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    for logger in loggers:
        logger.addHandler(keep)
    try:
        yield keep.lines
    finally:
        for logger in loggers:
            logger.removeHandler(keep)


def tracebacks(lines: list[str]) -> list[str]:
    return [line for line in lines if "Traceback" in line]
