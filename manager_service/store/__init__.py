"""The job store: one interface (``JobStore``) and its SQLAlchemy adapter. Every database operation of the
manager lives in ``sqlalchemy_store.py``; ``memory.py`` keeps the same contract in memory, for fast tests."""

from manager_service.store.base import JobStore, Page
from manager_service.store.sqlalchemy_store import SQLAlchemyJobStore, open_store

__all__ = ["JobStore", "Page", "SQLAlchemyJobStore", "open_store"]
