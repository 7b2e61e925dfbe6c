"""``--mode``, ``--parallel`` and ``--threshold`` of ``dbmaint create``, ``dbmaint schedule create`` and
``dbmaint plan``, and the request id the CLI gives every CreateMaintenance.

Input rules (checked before anything is sent; the manager checks them again):

* ``--mode`` is ``all`` (every table in scope, the default), ``plan`` (observe, change nothing) or ``auto``
  (observe, act only where a threshold is crossed); not given, the request leaves the mode unset (MODE_ALL);
* ``--parallel N`` is 1..8 tables at once per child (not given: the manager's default, 1);
* ``--threshold NAME=VALUE`` (repeatable; a repeated NAME keeps the last VALUE): NAME is one of
  ``dbmaint.thresholds.threshold_names()``, VALUE a finite number >= 0; thresholds need ``--mode plan`` or
  ``--mode auto`` (MODE_ALL compares nothing);
* without ``--request-id`` the CLI sends ``cli-<uuid4>``. When the answer is lost (a deadline, a dropped link)
  the error names that id, and the command given again with ``--request-id`` and that id finds the parent the
  first one created instead of creating a second one. The CLI does not resend by itself.
"""

from __future__ import annotations

import argparse
import json
import uuid

from dbmaint.cli.client import EXIT_REJECTED, EXIT_UNREACHABLE, CliError
from dbmaint.operations import MAX_PARALLEL
from dbmaint.thresholds import Thresholds, threshold_names
from dbmaint.v1 import maintenance_pb2 as pb

MODES = {"all": pb.MODE_ALL, "plan": pb.MODE_PLAN, "auto": pb.MODE_AUTO}
# The modes that compare the catalog with thresholds.
_OBSERVING = frozenset({pb.MODE_PLAN, pb.MODE_AUTO})
REQUEST_ID_PREFIX = "cli-"


def new_request_id() -> str:
    """A fresh idempotency key for one CreateMaintenance ("cli-" and a uuid4)."""
    return f"{REQUEST_ID_PREFIX}{uuid.uuid4()}"


def parse_threshold(text: str) -> tuple[str, float]:
    """An argparse type: "NAME=VALUE", NAME a known threshold, VALUE a finite number >= 0."""
    name, equals, value_text = text.partition("=")
    name = name.strip()
    if not equals:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    if name not in threshold_names():
        raise argparse.ArgumentTypeError(
            f"unknown threshold {name!r}; the thresholds are: {', '.join(threshold_names())}"
        )
    try:
        value = float(value_text)
        Thresholds.from_mapping({name: value})  # finite and not negative, as the manager checks it
    except ValueError as error:
        reason = str(error) if value_text.strip() else "no value"
        raise argparse.ArgumentTypeError(f"bad value for threshold {name!r}: {reason}") from None
    return name, value


def parse_parallel(text: str) -> int:
    """An argparse type: an integer from 1 to MAX_PARALLEL."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PARALLEL}: {text!r}")
    return value


def add_threshold_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        dest="thresholds",
        type=parse_threshold,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"replace a default threshold (repeatable; needs --mode plan or auto); NAME is one of "
        f"{', '.join(threshold_names())}",
    )


def add_mode_options(parser: argparse.ArgumentParser, *, parallel_help: str = "") -> None:
    """--mode, --parallel and --threshold."""
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        help="all: every table in scope (default); plan: observe and report, change nothing; auto: observe, act "
        "only on the tables over a threshold, most urgent first, observe again",
    )
    parser.add_argument(
        "--parallel",
        type=parse_parallel,
        metavar="N",
        help=f"tables each PostgreSQL child processes at once (1-{MAX_PARALLEL}; default 1){parallel_help}",
    )
    add_threshold_option(parser)


def apply_mode_options(request: pb.CreateMaintenanceRequest, args: argparse.Namespace) -> None:
    """Sets the request's mode, parallel and thresholds from the flags; thresholds without an observing mode
    are refused here (exit 2), as the manager would refuse them."""
    mode = getattr(args, "mode", None)
    if mode is not None:
        request.mode = MODES[mode]
    if getattr(args, "parallel", None) is not None:
        request.parallel = args.parallel
    if args.thresholds:
        if request.mode not in _OBSERVING:
            raise CliError(
                "--threshold needs --mode plan or --mode auto (mode all compares nothing)", EXIT_REJECTED
            )
        request.thresholds.update(dict(args.thresholds))


def config_mode(job: pb.Job) -> str:
    """The mode a job was created with, from its config's ``"mode"``: "all" when absent (or the config is not
    a JSON object), else "plan", "auto" or whatever a newer manager wrote."""
    try:
        config = json.loads(job.config or "{}")
    except ValueError:
        return "all"
    mode = config.get("mode", "all") if isinstance(config, dict) else "all"
    return str(mode)


def observes_tables(job: pb.Job) -> bool:
    """A job created with MODE_PLAN or MODE_AUTO: it reports what it did (or would do) per table."""
    return config_mode(job) in ("plan", "auto")


def with_retry_hint(error: CliError, request_id: str) -> CliError:
    """``error`` with the request id to repeat when the answer was lost (the parent may exist already)."""
    if error.exit_code != EXIT_UNREACHABLE:
        return error
    hint = f"; the parent may exist: repeat with --request-id {request_id} to find it, never a second one"
    return CliError(error.message + hint, error.exit_code, error.status)
