"""Regenerates the README's configuration tables from the option declarations of the three programs.

    python docs/config_tables.py           rewrite README.md between the config-table markers
    python docs/config_tables.py --check   exit 1 if README.md differs from the declarations (the drift test)

Each table sits between ``<!-- config-table:NAME:start -->`` and ``<!-- config-table:NAME:end -->``; the
``thresholds`` table (MODE_PLAN/MODE_AUTO) is rendered from ``dbmaint.thresholds`` the same way.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from dbmaint import thresholds
from dbmaint.cli.client import OPTIONS as CLI_OPTIONS
from dbmaint.config import Option, markdown_table
from manager_service.config import OPTIONS as MANAGER_OPTIONS
from worker_service.config import OPTIONS as WORKER_OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES: dict[str, Sequence[Option]] = {"manager": MANAGER_OPTIONS, "worker": WORKER_OPTIONS, "cli": CLI_OPTIONS}


def rendered_tables() -> dict[str, str]:
    """Every marked table by name, as markdown."""
    return {
        **{name: markdown_table(options) for name, options in TABLES.items()},
        "thresholds": thresholds.markdown_table(),
    }


def with_tables(readme: str) -> str:
    """``readme`` with every marked table replaced by the one its declarations render."""
    for name, rendered in rendered_tables().items():
        start, end = f"<!-- config-table:{name}:start -->", f"<!-- config-table:{name}:end -->"
        found = re.search(re.escape(start) + r"\n.*?" + re.escape(end), readme, re.DOTALL)
        if found is None:
            raise SystemExit(f"{README.name}: the markers of table {name!r} are missing")
        table = f"{start}\n{rendered}{end}"
        readme = readme[: found.start()] + table + readme[found.end() :]
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    fresh = with_tables(current)
    if args.check:
        if fresh != current:
            print(f"{README} drifted from the option declarations: run `python docs/config_tables.py`")
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
