"""Log output both services share: the human-readable default, or one JSON object per line (``--log-format
json``) for log pipelines. Lines about a job carry its fields (``JOB_FIELDS``) as ``extra``; the JSON form puts
each in its own key, the text form in the message or in the ``[...]`` context."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
# The fields a line about a job carries, when known.
JOB_FIELDS = ("job_id", "parent_id", "attempt", "worker_id", "target")


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
