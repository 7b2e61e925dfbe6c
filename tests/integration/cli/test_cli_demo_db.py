"""make-demo-db: a SQLite file whose free pages VACUUM gives back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dbmaint.cli.demo import sqlite_stats
from dbmaint.cli.main import main


def test_make_demo_db_leaves_reclaimable_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data" / "demo.db"

    code = main(["make-demo-db", str(path), "--rows", "6000"])

    assert code == 0
    before = sqlite_stats(path)
    assert before.freelist_count > 0
    assert before.reclaimable > before.size // 4  # the deleted half left whole pages free
    assert path.stat().st_size == before.size
    out = capsys.readouterr().out
    assert f"created {path}: " in out and "reclaimable" in out
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT count(*), min(id) FROM events").fetchone() == (3000, 3001)
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(events)")}
        assert "events_kind_created" in indexes
        connection.execute("VACUUM")
    finally:
        connection.close()
    after = sqlite_stats(path)
    assert after.freelist_count == 0
    assert after.size <= before.size - before.reclaimable
    assert not list(path.parent.glob(".*building"))


def test_make_demo_db_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.db"
    path.write_bytes(b"precious")

    refused = main(["make-demo-db", str(path), "--rows", "100"])
    err = capsys.readouterr().err
    kept = path.read_bytes()
    forced = main(["make-demo-db", str(path), "--rows", "100", "--force"])

    assert refused == 2
    assert err.strip() == f"dbmaint: error: {path} already exists (pass --force to replace it)"
    assert kept == b"precious"
    assert forced == 0
    assert sqlite_stats(path).page_count > 1


def test_make_demo_db_drops_a_stale_journal(tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    wal = tmp_path / "demo.db-wal"
    wal.write_bytes(b"stale frames of an older database")

    assert main(["make-demo-db", str(path), "--rows", "100", "--force"]) == 0

    assert not wal.exists()


def test_make_demo_db_exist_ok_leaves_an_existing_database_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "demo.db"
    assert main(["make-demo-db", str(path), "--rows", "200"]) == 0
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE marker (x)")
    connection.commit()
    connection.close()
    capsys.readouterr()

    code = main(["make-demo-db", str(path), "--rows", "200", "--exist-ok"])

    assert code == 0
    assert capsys.readouterr().out.startswith(f"kept the existing {path}: ")
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marker'").fetchone() == (1,)
    connection.close()
