"""The dbmaint manager: stores jobs, dispatches children to workers, tracks parents to a final status.

Layout, from the edge inward:
    cli.py, __main__.py    entry point: flags/env, logging, signals
    server.py              the gRPC server: servicers, health, reflection, run/shutdown
    servicers.py           protobuf <-> domain translation only
    convert.py             domain Job -> protobuf Job
    orchestrator.py        the async core: leases, dispatch loop, results, cancels, watchers
    workers.py             connected worker sessions (in memory)
    events.py              change feed for WatchJob
    dispatch.py            pure dispatch rules (slots, one op per target, order)
    state_machine.py       pure transition rules for children and parents
    validation.py          pure validation of requests
    store/                 the job store interface and its SQLAlchemy adapter
"""
