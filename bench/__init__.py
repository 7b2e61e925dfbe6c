"""dbmaint's benchmark suite: the same SQLite maintenance run directly, through dbmaint and through Celery.

Run it from the repository root with ``python -m bench`` (see ``bench/README.md``).
"""
