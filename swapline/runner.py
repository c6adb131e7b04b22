"""Materialize a whole project through real Dagster runs in the instance, grouped as Dagster's
graph requires: one run per source partition (each partitions definition's keys), then one run
of every unpartitioned asset, which Dagster orders inside it. The UI later shows the lineage and
every run of what was built.

A failing source fails its own run and is reported; the other sources and the unpartitioned run
go on. Inside a run, what waits on a failed asset is skipped and reported with the root cause.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from swapline.assets.automation import observe_sources, sync_partitions
from swapline.jobs import UNPARTITIONED, Graph, Node, execute, project_graph
from swapline.liveness import run_tags_here
from swapline.ops import interrupts
from swapline.project import Project

ET = dg.DagsterEventType
_STEP_EVENTS = {ET.ASSET_MATERIALIZATION_PLANNED, ET.STEP_START, ET.STEP_SUCCESS, ET.STEP_FAILURE,
                ET.ASSET_MATERIALIZATION, ET.ASSET_CHECK_EVALUATION, ET.RUN_FAILURE}


@dataclass(frozen=True)
class Launch:
    """One Dagster run: `keys` (all of one partitions definition) for one partition key or none."""

    label: str
    keys: tuple[dg.AssetKey, ...]
    partitions: str = UNPARTITIONED
    partition: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one asset (partition) in a finished run."""

    key: dg.AssetKey
    partition: str | None
    run_id: str
    ok: bool
    reason: str = ""  # why not: one line for the terminal
    seconds: float = 0.0
    error: Any = None  # the step's serializable error info, in full in the log file
    blocked: bool = False  # built, but a blocking check failed: what waits on it is skipped for this reason


@dataclass
class RunSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    log_file: Path | None = None  # failures' tracebacks go here; the terminal gets one line each
    outcomes: list[Outcome] = field(default_factory=list)  # every asset partition tried, in order
    report: list[str] = field(default_factory=list)  # the closing summary (swapline/summary.py)

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_runs(graph: Graph, partition_keys: Callable[[Node], list[str]], *, one_per_asset: bool = False) -> list[Launch]:
    """The runs that build every materializable asset: per partitions definition, one run per
    partition key (one source's chain), then one run of the unpartitioned assets (with
    `one_per_asset`, one run each in dependency order: for callers going step by step)."""
    groups: dict[str, list[dg.AssetKey]] = {}
    for key, node in graph.items():  # dependency order
        if not node.source:
            groups.setdefault(node.partitions, []).append(key)
    rest = groups.pop(UNPARTITIONED, [])
    if feeding := [key for key in rest for node in graph.values() if node.partitions and key in node.parents]:
        raise ValueError(f"{feeding[0].to_user_string()} is unpartitioned and feeds a partitioned asset: no run order fits")
    launches = [Launch(f"{keys[0].path[0]}/{partition}", tuple(keys), name, partition)
                for name, keys in groups.items() for partition in partition_keys(graph[keys[0]])]
    if one_per_asset:
        return launches + [Launch(key.to_user_string(), (key,)) for key in rest]
    return launches + ([Launch("unpartitioned assets", tuple(rest))] if rest else [])


def plan(project: Project) -> list[Launch]:
    """Step by step, for scripts and tests that materialize one step at a time: each local source's
    chain, then each unpartitioned asset, in the graph's dependency order."""
    return plan_runs(project_graph(project), lambda node: list(project.source_keys(node.key.path[0])), one_per_asset=True)


def materialize_project(project: Project, instance: dg.DagsterInstance, *, echo: Callable[[str], None] = print,
                        log_level: str = "INFO", log_file: Path | None = None) -> RunSummary:
    """Every asset, in the runs plan_runs groups it into. One line per source partition and per
    unpartitioned asset: `[i/n] label: ok (s)`, `FAILED (s): reason` or `skipped: root cause`."""
    from swapline.collection import collect_urls

    sync_partitions(project, instance)
    observe_sources(project, instance)  # what the runs build from, as the source watch would record it
    collect_urls(project, instance, Path(os.environ["SWAPLINE_HOME"]), echo=echo)  # URL sources: their batches
    graph = project_graph(project)
    launches = plan_runs(graph, lambda node: node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
    summary, start = RunSummary(log_file=log_file), time.monotonic()
    total, done = sum(1 if launch.partition else len(launch.keys) for launch in launches), 0
    for launch in launches:
        outcomes = run(project, instance, graph, launch, log_level)
        summary.outcomes += outcomes
        shown = [(launch.label, chain(outcomes))] if launch.partition else [(o.key.to_user_string(), o) for o in outcomes]
        for label, outcome in shown:
            done += 1
            echo(f"[{done}/{total}] {label}: {record(summary, label, outcome)}")
        stop_if_interrupted(outcomes, launch.label)
    summary.seconds = time.monotonic() - start
    summary.report = closing_report(instance, summary)
    return summary


def closing_report(instance: dg.DagsterInstance, summary: RunSummary) -> list[str]:
    """Warnings, per source what was (not) used, per asset ok or failed, as the runs recorded
    them in the instance (swapline/summary.py). The work is done by then: a summary that cannot
    be read says so in one line rather than failing the command."""
    from swapline.summary import summary_lines

    try:
        return summary_lines(instance, summary.outcomes)
    except Exception as exc:  # noqa: BLE001 - see above
        return [f"== no summary: {type(exc).__name__}: {exc}"]


def run(project: Project, instance: dg.DagsterInstance, graph: Graph, launch: Launch, log_level: str = "INFO") -> list[Outcome]:
    """Launch one run through the instance and say what became of each of its assets. The run is
    tagged with where it runs (swapline/liveness.py), which the supervisor watches."""
    tags = {"swapline/step": launch.label, **run_tags_here()}
    run_id = execute(project, instance, launch.partitions, list(launch.keys), launch.partition, tags, log_level)
    return outcomes(instance, graph, launch, run_id)


def chain(outcomes: list[Outcome]) -> Outcome:
    """One source's chain as one result: its first failure, else ok, with its steps' time."""
    failed = [o for o in outcomes if not o.ok and not o.reason.startswith("skipped: ")] or [o for o in outcomes if not o.ok]
    seconds = sum(o.seconds for o in outcomes)
    first = failed[0] if failed else outcomes[-1]
    return Outcome(first.key, first.partition, first.run_id, not failed, first.reason, seconds, first.error, first.blocked)


def record(summary: RunSummary, label: str, outcome: Outcome) -> str:
    """Count the outcome in `summary` under `label`, log a failure's traceback, and say it in words."""
    if outcome.ok:
        summary.succeeded.append(label)
        return f"ok ({outcome.seconds:.1f}s)"
    summary.failed[label] = outcome.reason
    if outcome.reason.startswith("skipped: "):
        return outcome.reason
    if summary.log_file is not None and outcome.error is not None:
        _append_log(summary.log_file, label, outcome.run_id, outcome.error)
    return f"FAILED ({outcome.seconds:.1f}s): {outcome.reason}"


def stop_if_interrupted(outcomes: list[Outcome], label: str) -> None:
    """After an interrupt (Ctrl-C, SIGTERM) no further run starts: raise once this one has ended."""
    if interrupts.requested() or any(o.error is not None and _is_interrupt(o.error) for o in outcomes):
        interrupts.request()
        raise KeyboardInterrupt(f"interrupted during {label}")


@dataclass
class StepLog:
    """A run's step events, by step key."""

    step_of: dict[dg.AssetKey, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    built: set[dg.AssetKey] = field(default_factory=set)
    failed_checks: dict[dg.AssetKey, list[str]] = field(default_factory=dict)  # blocking, with ERROR
    run_error: str | None = None  # why the run failed, when no step did (e.g. a resource failed to start)


def step_log(instance: dg.DagsterInstance, run_id: str) -> StepLog:
    steps = StepLog()
    for entry in instance.all_logs(run_id, of_type=_STEP_EVENTS):
        event, step = entry.dagster_event, entry.step_key
        kind = event.event_type
        if kind == ET.ASSET_MATERIALIZATION_PLANNED:
            steps.step_of[event.asset_key] = step
        elif kind == ET.STEP_START:
            steps.started[step] = entry.timestamp
        elif kind in (ET.STEP_SUCCESS, ET.STEP_FAILURE):
            steps.ended[step] = entry.timestamp
            if kind == ET.STEP_FAILURE:
                steps.errors[step] = event.step_failure_data.error if event.step_failure_data else None
        elif kind == ET.ASSET_MATERIALIZATION:
            steps.built.add(event.asset_key)
        elif kind == ET.RUN_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            steps.run_error = first_line(error) if error else (event.message or "the run failed").strip().splitlines()[0]
        else:
            check = event.event_specific_data
            if not check.passed and check.blocking and check.severity == dg.AssetCheckSeverity.ERROR:
                steps.failed_checks.setdefault(check.asset_key, []).append(check.check_name)
    return steps


def outcomes(instance: dg.DagsterInstance, graph: Graph, launch: Launch, run_id: str) -> list[Outcome]:
    """Each asset of a finished run, in dependency order: built; failed (its step's error, or the
    blocking check it failed); or skipped after a failed input, naming the root cause."""
    steps, out = step_log(instance, run_id), {}
    for key in launch.keys:
        step = steps.step_of.get(key, "")
        seconds = steps.ended.get(step, 0.0) - steps.started.get(step, steps.ended.get(step, 0.0))
        common = dict(key=key, partition=launch.partition, run_id=run_id, seconds=seconds)
        if step in steps.errors and key in steps.built and key in steps.failed_checks:
            reason = f"{key.path[-1]} {'/'.join(key.path[:-1])} failed check {', '.join(sorted(steps.failed_checks[key]))}"
            out[key] = Outcome(ok=False, reason=reason, blocked=True, **common)
        elif step in steps.errors:
            out[key] = Outcome(ok=False, reason=first_line(steps.errors[step]), error=steps.errors[step], **common)
        elif key in steps.built:
            out[key] = Outcome(ok=True, **common)
        else:
            upstream = next((out[p] for p in graph[key].parents if p in out and not out[p].ok), None)
            if upstream is None and steps.run_error and not steps.errors:
                out[key] = Outcome(ok=False, reason=f"not run: {steps.run_error}", **common)
            else:
                out[key] = Outcome(ok=False, reason=_skip_reason(upstream), **common)
    return [out[key] for key in launch.keys]


def _skip_reason(upstream: Outcome | None) -> str:
    """Skipped assets name the root cause, e.g. 'skipped: faceset anna failed check enough_faces'."""
    if upstream is None:
        return "skipped: the run ended before this step"
    if upstream.reason.startswith("skipped: "):
        return upstream.reason
    if upstream.blocked:
        return f"skipped: {upstream.reason}"
    return "skipped: an upstream step failed"


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
