"""Scope matched against the catalog, target URLs, and failures: real server, real errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL, make_url

from dbmaint.local import free_port
from dbmaint.operations import CHILD_JOB_TYPE, JobStatus, Operation, TableScope
from tests.support.postgresql import connect, make_table, note_for, query, run_engine, table_notes, table_stats
from worker_service.cancel import CancelToken
from worker_service.engines import EngineUnavailable, OperationFailed, default_registry
from worker_service.engines.postgresql import PostgresqlEngine, sanitize
from worker_service.executor import Assignment, run_assignment
from worker_service.targets import BoundTarget

WEIRD = 'x"; DROP TABLE a; --'


def analyzed(url: URL) -> set[str]:
    rows = query(
        url, "SELECT schemaname || '.' || relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
    )
    return {str(r[0]) for r in rows}


def tables(url: URL) -> set[str]:
    rows = query(
        url, "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname IN ('public', 'sales')"
    )
    return {str(r[0]) for r in rows}


@pytest.fixture
def shop(postgres_url: URL) -> URL:
    """public.a, sales.orders, sales.items."""
    make_table(postgres_url, "a", 300)
    make_table(postgres_url, "orders", 200, schema="sales")
    make_table(postgres_url, "items", 100, schema="sales")
    return postgres_url


def test_schemas_narrow_the_operation_to_their_tables(shop: URL) -> None:
    report = run_engine(shop, Operation.ANALYZE, TableScope(schemas=("sales",)))
    assert analyzed(shop) == {"sales.orders", "sales.items"}
    assert report.objects_processed == 2
    assert [n.split(":")[0] for n in table_notes(report)] == ["table sales.orders", "table sales.items"]


def test_tables_narrow_it_to_those_tables_qualified_or_through_the_search_path(shop: URL) -> None:
    report = run_engine(shop, Operation.ANALYZE, TableScope(tables=("a", "sales.items")))
    assert analyzed(shop) == {"public.a", "sales.items"}
    assert report.objects_processed == 2


def test_an_unqualified_table_is_looked_up_in_the_scope_schemas(shop: URL) -> None:
    run_engine(shop, Operation.ANALYZE, TableScope(schemas=("sales",), tables=("orders",)))
    assert analyzed(shop) == {"sales.orders"}


def test_unknown_names_fail_naming_each_of_them_and_nothing_runs(shop: URL) -> None:
    scope = TableScope(schemas=("nope", "pg_catalog"), tables=("ghost", "sales.ghost", "A", "pg_catalog.pg_class"))
    with pytest.raises(OperationFailed) as failed:
        run_engine(shop, Operation.ANALYZE, scope)
    message = str(failed.value)
    assert "schema 'nope' does not exist" in message
    assert "schema 'pg_catalog' is a system schema (not maintained)" in message
    assert "table 'ghost' does not exist (looked in: nope, pg_catalog)" in message
    assert "table 'sales.ghost' does not exist (looked in: sales)" in message
    assert "table 'A' does not exist" in message, "names are matched exactly: 'A' is not 'a'"
    assert "table 'pg_catalog.pg_class' does not exist" in message
    assert analyzed(shop) == set()


def test_a_hostile_name_is_only_a_name_that_is_not_found(shop: URL) -> None:
    with pytest.raises(OperationFailed) as failed:
        run_engine(shop, Operation.VACUUM, TableScope(tables=(WEIRD,)))
    assert str(failed.value) == f"table {WEIRD!r} does not exist (looked in: public)"
    assert tables(shop) == {"public.a", "sales.orders", "sales.items"}


def test_a_table_with_a_hostile_name_is_quoted_by_the_driver(shop: URL) -> None:
    with connect(shop) as conn:
        conn.execute('CREATE TABLE "x""; DROP TABLE a; --" (id int)')
        conn.execute('INSERT INTO "x""; DROP TABLE a; --" SELECT generate_series(1, 10)')
    for operation in Operation:
        report = run_engine(shop, operation, TableScope(tables=(WEIRD,)))
        assert report.objects_processed == (0 if operation is Operation.OPTIMIZE else 1), report.notes
    assert "public.a" in tables(shop)
    assert table_stats(shop, f"public.{WEIRD}")["last_vacuum"] is not None


def test_the_scope_error_reaches_the_child_as_its_error(shop: URL) -> None:
    assignment = Assignment(
        "job-1", 1, "pg", "vacuum", CHILD_JOB_TYPE, {"tables": ["sales.nothing"], "schemas": ["sales"]}
    )
    outcome = run_assignment(assignment, BoundTarget("pg", shop, PostgresqlEngine()), CancelToken())
    assert outcome.status is JobStatus.FAILED
    assert outcome.error == "table 'sales.nothing' does not exist (looked in: sales)"


def test_partitions_are_maintained_one_by_one_and_a_partitioned_table_when_named(postgres_url: URL) -> None:
    with connect(postgres_url) as conn:
        conn.execute("CREATE TABLE events (id int, at date) PARTITION BY RANGE (at)")
        conn.execute(
            "CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')"
        )
        conn.execute(
            "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
        )
        conn.execute("INSERT INTO events SELECT g, date '2024-06-01' + g FROM generate_series(1, 300) g")
    report = run_engine(postgres_url, Operation.VACUUM)
    assert sorted(n.split(":")[0] for n in table_notes(report)) == [
        "table public.events_2024",
        "table public.events_2025",
    ]
    report = run_engine(postgres_url, Operation.ANALYZE, TableScope(tables=("events",)))
    assert [n.split(":")[0] for n in table_notes(report)] == ["table public.events"]
    assert {"public.events_2024", "public.events_2025"} <= analyzed(postgres_url)


# -- target URLs


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "pg8000", "psycopg_async"])
def test_other_drivers_are_refused_at_start(driver: str) -> None:
    with pytest.raises(EngineUnavailable) as refused:
        default_registry().for_url(make_url(f"postgresql+{driver}://u:secret@db/app"))
    assert f"postgresql driver {driver!r} is not supported: this worker uses psycopg 3" in str(refused.value)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql+psycopg://db/app?bogus=1", 'invalid connection option "bogus"'),
        ("postgresql+psycopg://db/app?dbmaint_lock_timeout=soon", "dbmaint_lock_timeout='soon' is not a number"),
        ("postgresql+psycopg://db/app?dbmaint_lock_timeout=0", "must be a positive number of seconds"),
        ("postgresql+psycopg://u:secret@db", "must name a database"),
    ],
)
def test_unusable_urls_are_refused_at_start(url: str, problem: str) -> None:
    with pytest.raises(EngineUnavailable) as refused:
        PostgresqlEngine().check_url(make_url(url))
    assert problem in str(refused.value) and "secret" not in str(refused.value)


def test_the_url_check_needs_no_server() -> None:
    engine = default_registry().for_url(make_url(f"postgresql://u:pw@127.0.0.1:{free_port()}/app?sslmode=disable"))
    assert engine.name == "postgresql"


def test_a_url_without_driver_runs_on_psycopg(shop: URL) -> None:
    plain = shop.set(drivername="postgresql")
    engine = default_registry().for_url(plain)
    assert engine.run(Operation.ANALYZE, plain, CancelToken(), None).objects_processed == 3


def child(url: URL) -> JobStatus | str:
    outcome = run_assignment(
        Assignment("job-1", 1, "pg", "vacuum", CHILD_JOB_TYPE, {}),
        BoundTarget("pg", url, PostgresqlEngine()),
        CancelToken(),
    )
    assert outcome.status is JobStatus.FAILED
    return outcome.error


def test_an_unreachable_server_fails_the_child_without_the_password(postgres_url: URL) -> None:
    port = free_port()
    error = child(postgres_url.set(port=port, password="Sup3r-s3cret/pw"))
    assert error.startswith(
        f"cannot connect to PostgreSQL database {postgres_url.database!r} on 127.0.0.1:{port}: "
    )
    assert "Connection refused" in error or "connection" in error.lower()
    assert "Sup3r" not in error and "s3cret" not in error and "postgresql+psycopg://" not in error


def test_wrong_credentials_fail_the_child_without_the_password(postgres_url: URL) -> None:
    error = child(postgres_url.set(username="nobody_here", password="Sup3r-s3cret"))
    assert 'role "nobody_here" does not exist' in error
    assert "Sup3r" not in error and "s3cret" not in error


def test_driver_messages_are_sanitized() -> None:
    url = make_url("postgresql+psycopg://u:Pa55word@db/app")
    text = (
        "failed: host=db password=Pa55word dbname=app\n"
        "DETAIL: postgresql+psycopg://u:Pa55word@db/app password='x y'"
    )
    clean = sanitize(text, url)
    assert "Pa55word" not in clean and "x y" not in clean and "\n" not in clean
    assert "password=***" in clean and "postgresql+psycopg://u:***@db/app" in clean


# -- permissions: a skip for VACUUM, a real error for REINDEX


@pytest.fixture
def stranger(postgres_url: URL) -> Iterator[URL]:
    """A role of its own (cluster-wide, so dropped afterwards) owning public.mine; public.theirs is not its."""
    role = f"dbmaint_r_{uuid.uuid4().hex[:10]}"
    make_table(postgres_url, "mine", 2_000, delete="even")
    make_table(postgres_url, "theirs", 200, delete="even")
    with connect(postgres_url) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN".encode())
        conn.execute(f"ALTER TABLE mine OWNER TO {role}".encode())
    try:
        yield postgres_url.set(username=role)
    finally:
        with connect(postgres_url) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres".encode())
            conn.execute(f"DROP OWNED BY {role}".encode())
            conn.execute(f"DROP ROLE {role}".encode())


def test_vacuum_skips_a_table_the_role_does_not_own(stranger: URL) -> None:
    report = run_engine(stranger, Operation.VACUUM)
    assert (report.objects_processed, report.objects_skipped) == (1, 1)
    assert "dead tuples 1000 -> 0" in note_for(report, "public.mine")
    assert "skipping" in note_for(report, "public.theirs") and "owner" in note_for(report, "public.theirs")


def test_a_real_error_fails_the_child_naming_the_failed_table_with_the_report(stranger: URL) -> None:
    assignment = Assignment("job-1", 1, "pg", "reindex", CHILD_JOB_TYPE, {})
    outcome = run_assignment(assignment, BoundTarget("pg", stranger, PostgresqlEngine()), CancelToken())
    assert outcome.status is JobStatus.FAILED
    assert outcome.error.startswith("reindex failed on 1 of 2 table(s): public.theirs: ")
    assert "must be owner of table theirs" in outcome.error and "(SQLSTATE 42501)" in outcome.error
    assert outcome.report is not None and outcome.report.objects_processed == 1  # mine, the larger, came first
    assert outcome.report.objects_skipped == 1
    assert note_for(outcome.report, "public.theirs").startswith("failed table public.theirs: REINDEX TABLE")
    assert note_for(outcome.report, "public.mine").startswith("table public.mine: REINDEX TABLE CONCURRENTLY")
