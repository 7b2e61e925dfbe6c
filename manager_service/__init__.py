"""The dbmaint manager: stores jobs, dispatches children to workers, tracks parents to a final status, and fires
schedules.

Layout, from the edge inward:
    cli.py, __main__.py    entry point: flags/env, logging, signals
    config.py              the manager's options (declared with dbmaint.config)
    server.py              the gRPC server: servicers, health, reflection, the store lease, run/shutdown
    gate.py                leader or standby: who may serve (the store lease)
    reflection.py          gRPC reflection with the proto comments
    auth.py                bearer tokens and roles
    servicers.py           MaintenanceService and WorkerService: protobuf <-> domain translation only
    schedule_servicer.py   ScheduleService: protobuf <-> domain translation and request validation
    rpc_errors.py          the one map from domain errors to gRPC status codes
    malformed.py           refusing messages that do not parse
    convert.py             domain -> protobuf (jobs, workers, schedules, firings); windows both ways
    orchestrator.py        the async shell: lock, store threads, commit and lease loops, outboxes, cancels
    scheduler.py           the async shell of schedules: the loop that fires them (leader only)
    fleet.py               the pure fleet core: sessions, leases, queue, turns (events in, commands out)
    workers.py             worker sessions and the commands sent to them
    events.py              change feed for WatchJob
    metrics.py             Prometheus metrics
    dispatch.py            pure dispatch rules (slots, one op per target, order, windows)
    state_machine.py       pure transition rules for children and parents
    scheduling.py          pure planning of one scheduler step (catch-up, overlap, pause, range)
    schedule_rules.py      pure schedule maths: cron and DST rules, cadence, jitter, due slots, overlap
    window_rules.py        pure maintenance-window maths: openings, cutoff, end policies
    validation.py          pure validation of requests
    domain.py, errors.py   plain types and domain errors (no protobuf)
    store/                 the job store interface, its SQLAlchemy and in-memory adapters, migrations
"""
