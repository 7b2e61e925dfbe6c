"""``python -m worker_service``: the same as the ``dbmaint-worker`` entry point."""

from worker_service.cli import main

raise SystemExit(main())
