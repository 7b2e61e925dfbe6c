"""Logging: human-readable lines with the worker id, and the job's id, attempt and target on lines about a job.

    2025-01-01 12:00:00,000 INFO    worker_service.worker [worker=w1 job=3f2a attempt=1 target=db] started vacuum

Pass ``extra=job_context(...)`` on lines about a job. URLs only ever appear masked (``mask_url``); free text
that may quote a URL or password (a driver's error message) goes through ``redact`` first.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable
from typing import Any

from sqlalchemy.engine import URL

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(context)s] %(message)s"
JOB_FIELDS = ("job_id", "attempt", "target")


def job_context(job_id: str, attempt: int, target: str, parent_id: str = "") -> dict[str, Any]:
    """The ``extra`` of a log line about a job."""
    return {"job_id": job_id, "attempt": attempt, "target": target, "parent_id": parent_id}


class ContextFilter(logging.Filter):
    """Adds ``record.context``: ``worker=<id>`` plus the job fields the record carries."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = self.worker_id
        parts = [f"worker={self.worker_id}"]
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            parts.append(f"job={job_id}")
            parts.append(f"attempt={getattr(record, 'attempt', '?')}")
            target = getattr(record, "target", None)
            if target:
                parts.append(f"target={target}")
        record.context = " ".join(parts)
        return True


def redact(text: str, urls: Iterable[URL]) -> str:
    """``text`` with every known URL rendered masked and every known password replaced by ``***``."""
    for url in urls:
        masked = url.render_as_string(hide_password=True)
        text = text.replace(url.render_as_string(hide_password=False), masked)
        password = url.password
        if password:
            secret = str(password)
            for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
                if form:
                    text = text.replace(form, "***")
    return text
