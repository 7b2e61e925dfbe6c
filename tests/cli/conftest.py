from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from dbmaint.cli.main import main
from dbmaint.local import free_port
from tests.cli.fake_manager import FakeManager
from tests.cli.helpers import Run


@pytest.fixture
def fake() -> Iterator[FakeManager]:
    manager = FakeManager().start()
    yield manager
    manager.stop()


@pytest.fixture
def cli(fake: FakeManager, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Runs ``dbmaint --manager <fake> ARGS...`` in-process; returns the exit code and what it printed."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main(["--manager", fake.address, *args])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    return free_port()
