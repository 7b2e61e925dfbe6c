from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

DBMAINT = Path(sys.executable).with_name("dbmaint")  # the installed entry point


@dataclass
class Run:
    """What one in-process ``dbmaint`` run returned and printed."""

    code: int
    out: str
    err: str
