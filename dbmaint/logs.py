"""Log output both services share: the human-readable default, or one JSON object per line (``--log-format
json``) for log pipelines. Lines about a job carry its fields (``JOB_FIELDS``) as ``extra``; the JSON form puts
each in its own key, the text form in the message or in the ``[...]`` context."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from dbmaint import runtime

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
# Libraries whose own chatter stays at WARNING unless DEBUG is asked for (alembic: one line per migration step).
QUIET_LOGGERS = ("grpc", "sqlalchemy", "alembic")
# The fields a line about a job (or a schedule) carries, when known.
JOB_FIELDS = ("job_id", "parent_id", "attempt", "worker_id", "target", "schedule_id")


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", the job fields present, "error" with a traceback}, one per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(
    level: str,
    log_format: str,
    text_format: str,
    context: logging.Filter | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """The one logging set-up of both services: a single handler on stderr (or ``stream``) at ``level`` (one of
    LOG_LEVELS), as ``text_format`` lines or JSON objects; ``context`` adds the fields the format names. Returns
    the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    if context is not None:
        handler.addFilter(context)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    runtime.tune_logging()
    return handler
