"""watch and create --watch: the line-per-change view, the live view, exit codes, reconnection."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from io import StringIO

from rich.console import Console

from dbmaint.cli.render import LiveView
from dbmaint.cli.watch import WatchState
from dbmaint.v1 import maintenance_pb2 as pb
from tests.support.cli import DBMAINT, Run
from tests.support.fake_manager_for_cli import FakeManager

Cli = Callable[..., Run]


def body_rows(out: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def test_create_watch_follows_to_completed_and_exits_0(cli: Cli, fake: FakeManager) -> None:
    fake.service.autorun = True

    result = cli("create", "alpha", "beta", "-o", "vacuum", "-o", "analyze", "--watch")

    assert result.code == 0, result.err
    parent_id = fake.service.order[0]
    lines = result.out.splitlines()
    assert lines[0] == f"created parent {parent_id} with 4 children"
    # one plain line per change, e.g. "12:00:00 alpha vacuum running worker=fake-worker-1 attempt=1"
    assert any(line.endswith("alpha vacuum running worker=fake-worker-1 attempt=1") for line in lines)
    assert any(
        "beta analyze completed worker=fake-worker-1 attempt=1 took=0.25s reclaimed=0 B" in x for x in lines
    )
    rows = body_rows(result.out)
    assert [row[:5] for row in rows] == [
        ["alpha", "vacuum", "completed", "fake-worker-1", "1"],
        ["alpha", "analyze", "completed", "fake-worker-1", "1"],
        ["beta", "vacuum", "completed", "fake-worker-1", "1"],
        ["beta", "analyze", "completed", "fake-worker-1", "1"],
    ]
    assert rows[0][5:8] == ["0.25s", "4.0 MiB → 2.5 MiB", "1.5 MiB (38%)"]
    assert f"parent {parent_id} completed in " in result.out
    assert ": 4 succeeded, 0 failed, 0 cancelled" in result.out


def test_watch_of_a_failing_parent_exits_1_and_shows_the_errors(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha", "broken", autorun=True)

    result = cli("watch", created.parent.id)

    assert result.code == 1
    failed = [row for row in body_rows(result.out) if row[2] == "failed"]
    assert [row[:2] for row in failed] == [["broken", "vacuum"], ["broken", "analyze"], ["broken", "reindex"]]
    assert all(row[-1] == "database disk image is malformed" for row in failed)
    assert f"parent {created.parent.id} failed" in result.out
    assert "3 child job(s) failed: broken/vacuum, broken/analyze, broken/reindex" in result.out


def test_watch_shows_a_requeued_child_with_its_new_attempt_and_worker(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("flaky", autorun=True)

    result = cli("watch", created.parent.id)

    assert result.code == 0
    lines = result.out.splitlines()
    assert any(
        line.endswith("flaky vacuum pending worker=fake-worker-1 attempt=2 (worker lost)") for line in lines
    )
    assert any(line.endswith("flaky vacuum running worker=fake-worker-2 attempt=2") for line in lines)
    assert all(row[3:5] == ["fake-worker-2", "2"] for row in body_rows(result.out))


def test_watch_of_a_cancelled_parent_exits_1(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha")
    assert cli("cancel", created.parent.id).code == 0

    result = cli("watch", created.parent.id)

    assert result.code == 1
    assert f"parent {created.parent.id} cancelled" in result.out


def test_watch_of_one_child(cli: Cli, fake: FakeManager) -> None:
    created = fake.create("alpha", autorun=True)
    child = created.children[1]

    result = cli("watch", child.id)

    assert result.code == 0
    assert [row[:3] for row in body_rows(result.out)] == [["alpha", "analyze", "completed"]]
    assert f"child {child.id} completed" in result.out


def test_watch_of_an_unknown_job_exits_4(cli: Cli) -> None:
    result = cli("watch", "missing")

    assert result.code == 4
    assert result.err.strip() == "dbmaint: error: job 'missing' not found"


def test_watch_reopens_a_dropped_stream(cli: Cli, fake: FakeManager) -> None:
    fake.service.drop_watches = 1
    created = fake.create("alpha", autorun=True)

    result = cli("watch", created.parent.id)

    assert result.code == 0, result.err
    assert "lost the watch stream" in result.out
    assert "reconnected to the manager" in result.out
    assert sum(1 for request in fake.service.requests if type(request).__name__ == "WatchJobRequest") == 2


def test_live_view_renders_one_row_per_child(fake: FakeManager) -> None:
    created = fake.create("alpha", "flaky", autorun=True)
    fake.wait_terminal(created.parent.id)
    state = WatchState.of(fake.service._get(pb.GetJobRequest(id=created.parent.id), None))
    out = StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    view = LiveView(console)

    view.start(state)
    view.stop()
    console.print(view._render())

    lines = out.getvalue().splitlines()
    assert f"parent {created.parent.id}" in lines[-7] and "6/6 done" in lines[-7]
    assert [line.split()[:3] for line in lines[-6:]] == [
        ["alpha", "vacuum", "completed"],
        ["alpha", "analyze", "completed"],
        ["alpha", "reindex", "completed"],
        ["flaky", "vacuum", "completed"],
        ["flaky", "analyze", "completed"],
        ["flaky", "reindex", "completed"],
    ]
    assert "fake-worker-2  attempt 2" in lines[-1]


def test_watch_on_a_terminal_uses_the_live_view_and_ends_with_the_exit_code(fake: FakeManager) -> None:
    """The real entry point under a pseudo-terminal: the live view runs, then the table; exit 1 (a failure)."""
    fake.service.step = 0.15
    created = fake.create("alpha", "broken", autorun=True)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    process = subprocess.Popen(
        [str(DBMAINT), "--manager", fake.address, "watch", created.parent.id],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    code = process.wait(timeout=10)
    text = output.decode(errors="replace")

    assert code == 1
    assert "\x1b[?25l" in text  # the live display hid the cursor: it ran as a live view, not as plain lines
    assert "worker=" not in text
    assert "database disk image is malformed" in text
    assert f"parent {created.parent.id}" in text
    assert "Traceback" not in text


def _child(position: int, status: int) -> pb.Job:
    return pb.Job(
        id=f"child-{position}",
        type="database_maintenance_operation",
        parent_id="p",
        target=f"db{position // 4}",
        operation=pb.OPERATION_VACUUM,
        status=status,
        position=position,
        attempt=1,
    )


def test_watch_state_keeps_the_changes_of_children_beyond_the_snapshot_page() -> None:
    parent = pb.Job(id="p", type="database_maintenance_parent", status=pb.JOB_STATUS_RUNNING)
    state = WatchState.of(pb.GetJobResponse(job=parent, children=[_child(1, 1), _child(0, 1)]))
    assert [c.position for c in state.rows] == [0, 1]

    assert state.apply(_child(700, pb.JOB_STATUS_RUNNING)) is None
    previous = state.apply(_child(0, pb.JOB_STATUS_RUNNING))

    assert previous is not None and previous.status == pb.JOB_STATUS_PENDING
    assert [(c.position, c.status) for c in state.rows] == [(0, 2), (1, 1), (700, 2)]


def test_live_view_of_10000_children_shows_the_counters_and_the_unfinished_rows_that_fit() -> None:
    statuses = {0: pb.JOB_STATUS_FAILED, 5000: pb.JOB_STATUS_RUNNING, 9999: pb.JOB_STATUS_RUNNING}
    children = [
        _child(i, statuses.get(i, pb.JOB_STATUS_COMPLETED if i < 9000 else pb.JOB_STATUS_PENDING))
        for i in range(10_000)
    ]
    progress = pb.Progress(total=10_000, succeeded=8_997, failed=1, running=2, pending=1_000)
    parent = pb.Job(id="p", type="database_maintenance_parent", status=pb.JOB_STATUS_RUNNING, progress=progress)
    state = WatchState.of(pb.GetJobResponse(job=parent, children=children))
    out = StringIO()
    console = Console(file=out, width=160, height=12, force_terminal=True, color_system=None)

    console.print(_render(console, state))

    lines = out.getvalue().splitlines()
    assert "parent p" in lines[0] and "8998/10000 done" in lines[0]
    shown = [line.split()[:3] for line in lines[1:-1]]
    assert len(shown) == 8, "as many rows as the terminal has room for"
    assert shown[:3] == [
        ["db0", "vacuum", "failed"],
        ["db1250", "vacuum", "running"],
        ["db2250", "vacuum", "pending"],
    ]
    assert ["db2499", "vacuum", "running"] in shown
    assert lines[-1].strip() == "… 9992 more (8997 completed)"


def _render(console: Console, state: WatchState) -> object:
    view = LiveView(console)
    view._state = state
    return view._render()


def test_watch_of_a_parent_larger_than_a_page_ends_with_the_children_that_did_not_complete(
    cli: Cli, fake: FakeManager
) -> None:
    created = fake.create(*(f"db{i}" for i in range(200)))  # 600 children
    fake.service.CancelJob(pb.CancelJobRequest(id=created.parent.id), None)

    result = cli("watch", created.parent.id)

    assert result.code == 1
    assert len([row for row in body_rows(result.out) if row[2] == "cancelled"]) == 500
    assert f"100 more children not shown (0 completed): `dbmaint get {created.parent.id} --children`" in result.out
    requests = [r for r in fake.service.requests if isinstance(r, pb.GetJobRequest)]
    assert len(requests[-1].children_status) == 4, "the results re-read the children that did not complete"
