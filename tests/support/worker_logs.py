"""What the workers' ``--log-format json`` logs say about child attempts: how often each child was started,
when, and each attempt's span from its start to its end on the worker.

A worker logs "started <operation> ..." once it has started an attempt, and "<operation> completed in ...",
"<operation> cancelled: ..." or "<operation> failed: ..." when the attempt ended, before its result goes to the
manager; both lines carry ``job_id``, ``attempt`` and ``target``. A later attempt on the same target can only be
assigned after that result, so spans of one target that overlap mean two operations ran on it at once.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from dbmaint.local import ServiceProcess

FINISHED = re.compile(r"^[a-z_]+ (completed in |cancelled: |failed: )")


def _time(entry: dict[str, object]) -> float:
    return datetime.fromisoformat(str(entry["time"])).timestamp()


def _is_start(entry: dict[str, object]) -> bool:
    return str(entry.get("message", "")).startswith("started ") and "job_id" in entry


def starts(*workers: ServiceProcess) -> Counter[str]:
    """How many times each child (job id) was started, over every worker and every life of each."""
    counts: Counter[str] = Counter()
    for worker in workers:
        for entry in worker.json_lines():
            if _is_start(entry):
                counts[str(entry["job_id"])] += 1
    return counts


def first_start_after(wall_time: float, *workers: ServiceProcess) -> float | None:
    """The wall-clock time of the first child start logged by ``workers`` after ``wall_time`` (None: none yet)."""
    times = [_time(entry) for worker in workers for entry in worker.json_lines() if _is_start(entry)]
    times = [at for at in times if at > wall_time]
    return min(times) if times else None


@dataclass(frozen=True)
class Span:
    """One attempt of a child on one worker, from its start to its end (``end`` None: no end logged)."""

    worker: str
    job_id: str
    attempt: int
    target: str
    start: float
    end: float | None

    def __str__(self) -> str:
        end = f"{datetime.fromtimestamp(self.end).time()}" if self.end is not None else "(no end logged)"
        return (
            f"{self.target}: job {self.job_id} attempt {self.attempt} on {self.worker} "
            f"{datetime.fromtimestamp(self.start).time()} -> {end}"
        )


def spans(*workers: ServiceProcess) -> list[Span]:
    """Every attempt the workers started, with its end when they logged one, by start time."""
    found: list[Span] = []
    for worker in workers:
        open_: dict[tuple[str, int], dict[str, object]] = {}
        for entry in worker.json_lines():
            if "job_id" not in entry or "attempt" not in entry:
                continue
            key = (str(entry["job_id"]), int(str(entry["attempt"])))
            if _is_start(entry):
                open_[key] = entry
            elif FINISHED.match(str(entry.get("message", ""))) and key in open_:
                begun = open_.pop(key)
                found.append(Span(worker.name, key[0], key[1], str(begun["target"]), _time(begun), _time(entry)))
        for (job_id, attempt), begun in open_.items():
            found.append(Span(worker.name, job_id, attempt, str(begun["target"]), _time(begun), None))
    return sorted(found, key=lambda span: span.start)


def overlaps(found: list[Span]) -> list[tuple[Span, Span]]:
    """Pairs of attempts on one target whose spans overlap (one started before the other had ended); an attempt
    with no end logged overlaps every later one on its target."""
    pairs = []
    by_target: dict[str, list[Span]] = {}
    for span in found:
        by_target.setdefault(span.target, []).append(span)
    for on_target in by_target.values():
        on_target.sort(key=lambda span: span.start)
        for i, earlier in enumerate(on_target):
            for later in on_target[i + 1 :]:
                if earlier.end is None or later.start < earlier.end:
                    pairs.append((earlier, later))
    return pairs
