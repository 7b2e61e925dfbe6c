"""What /proc says about the processes the benchmark starts (CPU time, memory), and what their logs warn of.

The processes themselves are ``dbmaint.local.ServiceProcess``es (the dbmaint fleet a ``LocalFleet``).

CPU time of a process is ``utime + stime + cutime + cstime`` from ``/proc/<pid>/stat`` (its own time plus
that of its children it has waited for), in clock ticks (``SC_CLK_TCK``, usually 10 ms). A runner takes a
snapshot of every process involved (a process and all its descendants, found through the ``ppid`` field)
right before its clock starts and again right after it stops, and reports the difference. The benchmark's
own process (the client) is measured with ``resource.getrusage(RUSAGE_SELF)``.
"""

from __future__ import annotations

import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbmaint.local import ServiceProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOG_FINDING = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
MAX_FINDINGS = 20


# -- /proc --------------------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` in seconds (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the command: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17); fields[0] is field 3.
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def system_busy_seconds() -> float:
    """CPU time of the whole machine spent outside idle and iowait, from the first line of /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


@dataclass
class CpuMeter:
    """CPU seconds of named process trees (and of this process, as "client") between ``start`` and ``stop``.

    ``other_seconds``: the machine's busy CPU time over the same window minus the measured processes' (other
    processes: someone else's test suite, the kernel); a high figure means the run was disturbed."""

    roots: dict[str, int]
    include_self: bool = True
    other_seconds: float = 0.0
    _start: dict[str, float] = field(default_factory=dict)
    _busy_start: float = 0.0

    def _read(self) -> dict[str, float]:
        values = {name: tree_cpu_seconds(pid) for name, pid in self.roots.items()}
        if self.include_self:
            values["client"] = self_cpu_seconds()
        return values

    def start(self) -> None:
        self._start = self._read()
        self._busy_start = system_busy_seconds()

    def stop(self) -> dict[str, float]:
        end = self._read()
        busy = system_busy_seconds() - self._busy_start
        measured = {name: round(end[name] - self._start.get(name, 0.0), 3) for name in end}
        self.other_seconds = round(max(0.0, busy - sum(measured.values())), 3)
        return measured


# -- logs -------------------------------------------------------------------------------------------------------


def findings(process: ServiceProcess) -> list[str]:
    """Log lines with WARNING, ERROR, CRITICAL or a traceback (the first MAX_FINDINGS)."""
    return [line for line in process.log_lines() if LOG_FINDING.search(line)][:MAX_FINDINGS]


def timed_run(name: str, argv: list[str], log: Path, timeout: float) -> tuple[float, int | None]:
    """Run ``argv`` to its end as a ``ServiceProcess`` (output to ``log``): (seconds from just before the
    process is started to its exit, its exit code; None when it was killed at ``timeout``). Process start is
    included."""
    began = time.perf_counter()
    code = ServiceProcess(name, argv, log).start().wait_or_kill(timeout)
    return time.perf_counter() - began, code
