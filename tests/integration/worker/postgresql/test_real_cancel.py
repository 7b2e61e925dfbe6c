"""A cancel stops a real maintenance statement on the server -- a slowed VACUUM, a REINDEX CONCURRENTLY that
waits for a writer -- and the catalog shows it; the next reindex cleans what the interrupted one left."""

from __future__ import annotations

import time

from sqlalchemy.engine import URL

from dbmaint.operations import Operation
from tests.support.polling import wait_for
from tests.support.postgresql import (
    connect,
    in_background,
    make_table,
    query,
    run_engine,
    slow_vacuums,
    table_stats,
    vacuum_progress,
    worker_backends,
)
from worker_service.cancel import CancelToken, OperationCancelled

INVALID_INDEXES = (
    "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
    "WHERE x.indrelid = 'public.orders'::regclass AND NOT x.indisvalid ORDER BY 1"
)


def test_a_cancel_stops_a_real_vacuum_mid_run(postgres_url: URL) -> None:
    make_table(postgres_url, "orders", 30_000, delete="even")
    cancel = CancelToken()
    with slow_vacuums(postgres_url):
        background = in_background(lambda: run_engine(postgres_url, Operation.VACUUM, cancel=cancel))
        [(pid, phase, scanned, total)] = wait_for(
            lambda: [row for row in vacuum_progress(postgres_url) if row[2] > 0],
            timeout=15,
            message="the VACUUM never started scanning",
        )
        assert phase == "scanning heap" and scanned < total, "the VACUUM is mid-run"
        cancelled_at = time.monotonic()
        cancel.cancel("operator said stop")
        background.join(5)

    assert isinstance(background.error, OperationCancelled), background.error or background.result
    assert background.ended_at is not None and background.ended_at - cancelled_at < 3
    assert vacuum_progress(postgres_url) == [], "the backend still runs the VACUUM"
    assert not [b for b in worker_backends(postgres_url) if b[0] == pid and b[1] == "active"]
    assert table_stats(postgres_url, "public.orders")["last_vacuum"] is None, "the VACUUM did not finish"


def test_a_cancelled_reindex_concurrently_leaves_an_invalid_index_that_the_next_reindex_drops(
    postgres_url: URL,
) -> None:
    """REINDEX CONCURRENTLY first creates the ``*_ccnew`` indexes (invalid), then waits for the table's writers
    before building them: a writer in an open transaction holds it there, mid-run, for the cancel to find."""
    make_table(postgres_url, "orders", 5_000)
    patient = postgres_url.update_query_dict({"dbmaint_lock_timeout": "60"})
    cancel = CancelToken()
    with connect(postgres_url, autocommit=False) as writer:
        writer.execute("INSERT INTO orders VALUES (0, 'a writer in an open transaction')")
        background = in_background(lambda: run_engine(patient, Operation.REINDEX, cancel=cancel))
        wait_for(
            lambda: query(
                postgres_url,
                "SELECT phase FROM pg_stat_progress_create_index WHERE datname = %s AND command = %s",
                (postgres_url.database, "REINDEX CONCURRENTLY"),
            ),
            timeout=15,
            message="the REINDEX CONCURRENTLY never showed up in pg_stat_progress_create_index",
        )
        cancel.cancel("operator said stop")
        background.join(5)
        writer.rollback()

    assert isinstance(background.error, OperationCancelled), background.error or background.result
    assert (
        query(
            postgres_url,
            "SELECT 1 FROM pg_stat_progress_create_index WHERE datname = %s",
            (postgres_url.database,),
        )
        == []
    )
    leftovers = [row[0] for row in query(postgres_url, INVALID_INDEXES)]
    assert leftovers and all(name.endswith("_ccnew") for name in leftovers), leftovers

    report = run_engine(postgres_url, Operation.REINDEX)

    assert report.objects_processed == 1
    for name in leftovers:
        assert any(note.startswith(f"dropped invalid index public.{name} ") for note in report.notes), report.notes
    assert query(postgres_url, INVALID_INDEXES) == []
