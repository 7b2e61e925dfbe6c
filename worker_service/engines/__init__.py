"""Maintenance engines: the ``Engine`` protocol, the registry by dialect, and the engines themselves."""

from worker_service.engines.base import Engine, EngineUnavailable, OperationFailed
from worker_service.engines.registry import EngineRegistry, default_registry
from worker_service.engines.sqlite import SqliteEngine

__all__ = [
    "Engine",
    "EngineRegistry",
    "EngineUnavailable",
    "OperationFailed",
    "SqliteEngine",
    "default_registry",
]
