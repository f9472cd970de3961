"""How the process's log lines look: text for people, or one JSON object per line for log shippers
(`GQL_MAIL_LOG_FORMAT=json`, `gql-mail serve --log-format json`).

A JSON line has `time` (UTC, ISO 8601), `level`, `logger`, `message`, and every field a caller passed in
`extra=` (the delivery log gives `account`, `queueId` and `messageId`; see services/delivery_report.py),
plus `exception` with the traceback when there is one. Redaction (log_redaction.py) has already run on the
message and the traceback when the record was made; the extra fields are redacted here, so nothing a JSON
line carries escapes it. One handler on the root logger serves every logger, uvicorn's included (serve
passes uvicorn no logging configuration of its own), so its lines are JSON too.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from gql_mail.log_redaction import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has, and what formatters or uvicorn add: not fields of a JSON line.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}


def _field(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = _field(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = redact(record.stack_info)
        return orjson.dumps(line).decode()


def configure(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """One handler on the root logger, in `log_format` ("text" or "json"), at `level`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
