"""Engines by SQLAlchemy dialect name.

Adding an engine (PostgreSQL, MariaDB) is one module implementing ``Engine`` plus one line in
``default_registry``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import URL

from worker_service.engines.base import Engine, EngineUnavailable
from worker_service.engines.mariadb import MariadbEngine
from worker_service.engines.postgresql import PostgresqlEngine
from worker_service.engines.sqlite import SqliteEngine
from worker_service.faults import NO_FAULTS, FaultPlan


class EngineRegistry:
    """Maps a URL's dialect to the engine that serves it."""

    def __init__(self, engines: Iterable[Engine]) -> None:
        self._engines: dict[str, Engine] = {}
        for engine in engines:
            if engine.dialect in self._engines:
                raise ValueError(f"two engines for dialect {engine.dialect!r}")
            self._engines[engine.dialect] = engine

    @property
    def dialects(self) -> tuple[str, ...]:
        return tuple(sorted(self._engines))

    def for_url(self, url: URL) -> Engine:
        """The engine for ``url``, after it accepted the URL. Raises EngineUnavailable (message without URL)."""
        dialect = url.get_backend_name()
        engine = self._engines.get(dialect)
        if engine is None:
            raise EngineUnavailable(
                f"no engine for database dialect {dialect!r} (driver {url.get_driver_name()!r}); "
                f"this worker supports: {', '.join(self.dialects) or 'nothing'}"
            )
        engine.check_url(url)
        return engine


def default_registry(faults: FaultPlan = NO_FAULTS) -> EngineRegistry:
    """The engines this worker ships with."""
    return EngineRegistry(
        [SqliteEngine(faults=faults), PostgresqlEngine(faults=faults), *MariadbEngine.per_dialect(faults)]
    )
