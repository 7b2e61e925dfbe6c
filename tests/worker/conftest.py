from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_db


@pytest.fixture
def sample_db(tmp_path: Path) -> Path:
    """A ~3 MB database: a table of 20k rows and an index, half the rows deleted (a free list to reclaim)."""
    return make_db(tmp_path / "sample.db")


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "small.db", rows=500)
