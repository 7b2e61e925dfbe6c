"""Targets bound to their engine: what the executor looks a target name up in.

Binding happens once, at start: a target whose URL no engine serves stops the worker (exit code 2) with a
message that names the target and shows the URL with its password masked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.engine import URL

from dbmaint.parsers import mask_url
from worker_service.config import TargetSpec
from worker_service.engines.base import Engine, EngineUnavailable
from worker_service.engines.registry import EngineRegistry


@dataclass(frozen=True, slots=True)
class BoundTarget:
    """A served target: name, URL (kept out of repr) and the engine that runs operations on it."""

    name: str
    url: URL = field(repr=False)
    engine: Engine

    @property
    def display_url(self) -> str:
        return mask_url(self.url)


def bind_targets(specs: Iterable[TargetSpec], registry: EngineRegistry) -> Mapping[str, BoundTarget]:
    """Bind every target to its engine; raises EngineUnavailable naming the target (URL masked)."""
    bound: dict[str, BoundTarget] = {}
    for spec in specs:
        try:
            engine = registry.for_url(spec.url)
        except EngineUnavailable as exc:
            raise EngineUnavailable(f"target {spec.name!r} ({spec.display_url}): {exc}") from None
        bound[spec.name] = BoundTarget(name=spec.name, url=spec.url, engine=engine)
    return bound
