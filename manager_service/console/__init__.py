"""The web console: an aiohttp app served by the manager in its own event loop (``app.Console``), its JSON API
under ``/api/v1/`` (``api``), and the security decisions it applies (``security``, pure)."""

from manager_service.console.app import Console

__all__ = ["Console"]
