"""The README's configuration tables must be exactly what `python docs/config_tables.py` renders from the
option declarations (like the generated protobuf code and its .proto)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "docs" / "config_tables.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_tables", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_configuration_tables_match_the_option_declarations() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_table_that_drifted_from_its_declarations_is_rendered_back() -> None:
    script = _script()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    row = "| `--slots` | `DBMAINT_SLOTS` | `1` | operations run at once (always on different targets) |\n"
    assert row in readme
    drifted = readme.replace(row, "")
    assert script.with_tables(drifted) == readme
    for name in ("manager", "worker", "cli"):
        assert f"<!-- config-table:{name}:start -->\n| flag | variable | default | meaning |" in readme
