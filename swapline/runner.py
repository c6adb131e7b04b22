"""Materialize a whole project in dependency order, one run per partition, into a real
Dagster instance, so the UI later shows the lineage and every run of what was built.

A failing source fails its own run and is reported; the other sources and stages go on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg

from swapline.assets.automation import observe_sources, sync_partitions
from swapline.assets.common import sources_partitions
from swapline.build import build_assets, default_resources
from swapline.liveness import run_tags_here
from swapline.ops import interrupts
from swapline.project import Project


@dataclass
class Step:
    label: str
    keys: list[dg.AssetKey]
    partition: str | None = None
    after: tuple[str, ...] = ()  # labels of steps whose failure makes this one pointless


@dataclass
class RunSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    log_file: Path | None = None  # failures' tracebacks go here; the terminal gets one line each

    @property
    def ok(self) -> bool:
        return not self.failed


def plan(project: Project, partitions: dict[str, list[str]] | None = None) -> list[Step]:
    """The order a person would run things in: per source partition (`partitions`: per identity;
    default its local sources), then per identity, swap, conversion."""
    steps = []
    for identity in project.identities:
        for key in (partitions or {}).get(identity, project.source_keys(identity)):
            keys = [dg.AssetKey([identity, stage]) for stage in ("source_media", "frames", "aligned_faces")]
            steps.append(Step(f"{identity}/{key}", keys, key))
        steps.append(Step(f"{identity}/faceset", [dg.AssetKey([identity, "faceset"])]))
    # A faceset still builds from the sources that worked; later stages need their inputs.
    steps += [Step(f"{name}/target", [dg.AssetKey([name, "target_video"]), dg.AssetKey([name, "target_faces"])])
              for name in project.conversions]
    steps += [Step(f"{name}/face_model", [dg.AssetKey([name, "face_model"])], after=(f"{s.a}/faceset", f"{s.b}/faceset"))
              for name, s in project.swaps.items()]
    steps += [Step(f"{name}/converted_video", [dg.AssetKey([name, "converted_video"])],
                   after=(f"{c.swap}/face_model", f"{name}/target")) for name, c in project.conversions.items()]
    return steps


def materialize_project(project: Project, instance: dg.DagsterInstance, *, resources: dict | None = None,
                        echo: Callable[[str], None] = print, log_level: str = "INFO", log_file: Path | None = None) -> RunSummary:
    from swapline.collection import collect_urls

    sync_partitions(project, instance)
    observe_sources(project, instance)  # what the runs build from, as the source watch would record it
    collect_urls(project, instance, Path(os.environ["SWAPLINE_HOME"]), echo=echo)  # URL sources: their batches
    partitions = {identity: instance.get_dynamic_partitions(sources_partitions(identity).name) for identity in project.identities}
    assets = build_assets(project)
    resources = resources or default_resources()
    summary, start = RunSummary(log_file=log_file), time.monotonic()
    steps = plan(project, partitions)
    for i, step in enumerate(steps, 1):
        echo(f"[{i}/{len(steps)}] {step.label}: {run_step(step, assets, instance, resources, summary, log_level)}")
    summary.seconds = time.monotonic() - start
    return summary


def run_step(step: Step, assets: list[dg.AssetsDefinition], instance: dg.DagsterInstance, resources: dict,
             summary: RunSummary, log_level: str = "INFO") -> str:
    """Materialize one step (or skip it after a failed `after` step), record the outcome in
    `summary` and return it in words (`swapline refresh` runs its steps through here too).
    The run is tagged with where it runs (swapline/liveness.py). After an interrupt (Ctrl-C,
    SIGTERM) no further step starts: KeyboardInterrupt is raised once this one has ended."""
    if upstream := [label for label in step.after if label in summary.failed]:
        summary.failed[step.label] = _skip_reason(summary.failed[upstream[0]])
        return summary.failed[step.label]
    t0 = time.monotonic()
    result = dg.materialize(assets, selection=step.keys, partition_key=step.partition, instance=instance,
                            resources=resources, raise_on_error=False, tags={"swapline/step": step.label, **run_tags_here(step.keys)},
                            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
    took = time.monotonic() - t0
    if result.success:
        summary.succeeded.append(step.label)
        return f"ok ({took:.1f}s)"
    error = _step_error(result)
    summary.failed[step.label] = _blocked_faceset(step, instance) or first_line(error)
    if summary.log_file is not None and error is not None:
        _append_log(summary.log_file, step.label, result.run_id, error)
    if interrupts.requested() or (error is not None and _is_interrupt(error)):
        interrupts.request()
        raise KeyboardInterrupt(f"interrupted during {step.label}")
    return f"FAILED ({took:.1f}s): {summary.failed[step.label]}"


def _blocked_faceset(step: Step, instance: dg.DagsterInstance) -> str | None:
    """For a faceset step that failed a blocking check (its materialization is still
    recorded), the reason in words; None for any other step or failure."""
    from swapline.quality_checks.faceset_checks import failed_blocking_checks

    if len(step.keys) != 1 or step.keys[0].path[-1] != "faceset":
        return None
    identity = step.keys[0].path[0]
    failed = failed_blocking_checks(instance, identity)
    return f"faceset {identity} failed check {', '.join(failed)}" if failed else None


def _skip_reason(upstream_reason: str) -> str:
    """Skipped steps name the root cause, e.g. 'skipped: faceset anna failed check enough_faces'."""
    if upstream_reason.startswith("skipped: "):
        return upstream_reason
    if upstream_reason.startswith("faceset "):
        return f"skipped: {upstream_reason}"
    return "skipped: an upstream step failed"


def _step_error(result: dg.ExecuteInProcessResult):
    """The first failed step's error (Dagster's serializable error info), or None."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error
    return None


def first_line(error) -> str:
    """One line for the terminal: the user's error, not Dagster's wrappers around it."""
    if error is None:
        return "run failed"
    while error.cause and "dagster" in error.cls_name.lower():
        error = error.cause
    return error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name


def _is_interrupt(error) -> bool:
    names = []
    while error is not None:
        names.append(error.cls_name)
        error = error.cause
    return any(name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt", "Interrupted") for name in names)


def _append_log(log_file: Path, label: str, run_id: str, error) -> None:
    """The whole error, traceback and causes, for the one line the terminal shows."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {label} (run {run_id})\n{error.to_string()}\n")


def new_log_file(home: Path, command: str) -> Path:
    """Where a CLI command's failure details go: $DAGSTER_HOME/logs/<time>-<command>.log."""
    return home / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}.log"


def write_instance_yaml(home: Path) -> None:
    """A project-local DAGSTER_HOME on SQLite: one training at a time in the `gpu` pool,
    slots freed after cancelled runs, runs capped in wall time."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "concurrency:\n  pools:\n    default_limit: 1\n"
            "run_monitoring:\n  enabled: true\n  free_slots_after_run_end_seconds: 300\n  max_runtime_seconds: 172800\n"
            "telemetry:\n  enabled: false\n"
        )
