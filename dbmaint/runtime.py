"""Process-wide settings both services apply once they have started (imports done, configuration read).

Both come from measuring the benchmark's hot path, where per-child work is a few hundred microseconds:

* Logging records skip what no format here uses: the caller's file and line (a frame walk per record), the
  process and thread ids (see "Optimization" in the logging HOWTO of the Python documentation).
* ``gc.freeze()`` moves everything alive after start-up (modules, SQLAlchemy and protobuf metadata) out of the
  collector's reach, so the frequent collections caused by short-lived messages stop re-scanning it.
"""

from __future__ import annotations

import gc
import logging


def tune_logging() -> None:
    logging._srcfile = None  # no %(pathname)s / %(lineno)d / %(funcName)s in our formats
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
