"""The automation, driven in-process as Dagster's daemon drives it under `dagster dev`: a tick of
the source watch, a tick of the automation, and runs for exactly what it requested. For tests and
benchmarks, which need to see each step; `./dev ui` runs the real sensors.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from swapline.assets.automation import observe_sources
from swapline.build import build_assets, build_definitions, default_resources
from swapline.liveness import run_tags_here
from swapline.project import load_project

Request = tuple[str, str | None]  # (asset key as "anna/frames", partition or None)


@dataclass
class Tick:
    """One automation tick: what it requested, and the runs that materialized it."""

    requested: list[Request]
    runs: list[dict] = field(default_factory=list)  # {"assets", "partition", "run_id", "success", "seconds"}
    seconds: float = 0.0


class InProcessDaemon:
    """The sensors evaluate the definitions loaded at start (or at the last `reload`, as the code
    server does); each run loads the project file afresh, as Dagster's run workers do."""

    def __init__(self, project_file: Path, instance: dg.DagsterInstance, resources: dict | None = None):
        self.project_file, self.instance = project_file, instance
        self.resources = resources or default_resources()
        self.cursor = None  # the automation's AssetDaemonCursor
        self.reload()

    def reload(self) -> None:
        """Reload the code location: a changed setting is seen as a changed code version."""
        self.defs = build_definitions(load_project(self.project_file), self.project_file, self.resources)

    def watch(self) -> list[dg.AssetObservation]:
        """One source_watch tick on the project file as it is now; its observations are recorded
        (the daemon does that with a sensor's asset events)."""
        return observe_sources(load_project(self.project_file), self.instance)

    def evaluate(self) -> list[Request]:
        """One automation tick: the asset partitions requested, in a stable order."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        requested = [(r.key.to_user_string(), p) for r in result.results if isinstance(r.key, dg.AssetKey)
                     for p in result.get_requested_partitions(r.key)]
        return sorted(set(requested), key=lambda kp: (kp[0], kp[1] or ""))

    def run(self, requested: list[Request], log_level: str = "WARNING") -> list[dict]:
        """Materialize what one tick requested, grouped into runs as the daemon groups them: one
        run per partition (that source's stages together), then one run for the unpartitioned
        assets (Dagster orders them within it). Failures are recorded, not raised."""
        groups: dict[str | None, list[dg.AssetKey]] = defaultdict(list)  # source keys name their identity
        for key, partition in requested:
            groups[partition].append(dg.AssetKey.from_user_string(key))
        runs, assets = [], build_assets(load_project(self.project_file))
        for partition in sorted(groups, key=lambda p: (p is None, p or "")):
            start = time.perf_counter()
            result = dg.materialize(assets, selection=groups[partition], partition_key=partition,
                                    instance=self.instance, resources=self.resources, raise_on_error=False,
                                    tags={"swapline/automation": "in-process", **run_tags_here(groups[partition])},
                                    run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
            runs.append({"assets": [k.to_user_string() for k in groups[partition]], "partition": partition,
                         "run_id": result.run_id, "success": result.success,
                         "seconds": round(time.perf_counter() - start, 2)})
        return runs

    def settle(self, max_ticks: int = 10, until: set[str] | None = None) -> list[Tick]:
        """Tick and run until a tick requests nothing (or, with `until`, until one of those assets
        has been materialized by a tick's runs)."""
        ticks = []
        for _ in range(max_ticks):
            start = time.perf_counter()
            tick = Tick(self.evaluate())
            if not tick.requested:
                break
            tick.runs = self.run(tick.requested)
            tick.seconds = round(time.perf_counter() - start, 2)
            ticks.append(tick)
            if until and until & {key for key, _ in tick.requested}:
                break
        return ticks


def describe(ticks: list[Tick]) -> str:
    """The ticks in words, one line per run: `tick 1: anna/frames, anna/source_media [photos_x] ok (1.2 s)`."""
    return "\n".join(f"tick {i}: {', '.join(r['assets'])}" + (f" [{r['partition']}]" if r["partition"] else "")
                     + f" {'ok' if r['success'] else 'FAILED'} ({r['seconds']} s)"
                     for i, tick in enumerate(ticks, 1) for r in tick.runs)


def materialization_counts(instance: dg.DagsterInstance) -> Counter:
    """How often each (asset, partition) has been materialized: the difference over a refresh is
    exactly what it rebuilt."""
    counts: Counter = Counter()
    for key in instance.get_asset_keys():
        cursor = None
        while True:
            page = instance.fetch_materializations(key, limit=1000, cursor=cursor)
            counts.update((key.to_user_string(), r.asset_materialization.partition) for r in page.records)
            if not page.has_more:
                break
            cursor = page.cursor
    return counts
