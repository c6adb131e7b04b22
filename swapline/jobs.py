"""The project's asset graph as Dagster resolves it, and the jobs `swapline run` and `refresh`
launch through the instance (dg.execute_job), so the executor the deployment configures
(swapline/executors.py: in-process unless SWAPLINE_EXECUTOR says otherwise) runs the steps.

Dagster resolves no named asset job over several partitions definitions, and the implicit job
that spans them has a reserved name a reconstructable job cannot take. So there is one job per
partitions definition (each identity's source partitions) and one for the unpartitioned assets;
a run picks its job by the partitions of what it builds, `asset_selection` and the
`dagster/partition` tag pick the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import dagster as dg

from swapline.build import build_assets, build_definitions, default_resources
from swapline.liveness import PARTITION_TAG
from swapline.project import Project, load_project, project_path

UNPARTITIONED = ""  # the partitions name of assets without partitions

_LAUNCHED: dict[str, Project] = {}  # projects this process launched runs of, by fingerprint


@dataclass(frozen=True)
class Node:
    """One asset as Dagster's graph has it."""

    key: dg.AssetKey
    parents: tuple[dg.AssetKey, ...]
    partitions_def: dg.PartitionsDefinition | None
    code_version: str | None
    source: bool  # observed outside Dagster (`<identity>/source_files`), never materialized

    @property
    def partitions(self) -> str:
        return partitions_name(self.partitions_def)


Graph = dict[dg.AssetKey, Node]


def partitions_name(partitions_def: dg.PartitionsDefinition | None) -> str:
    # Partitioned assets here have dynamic partitions (one per source), which are named.
    return UNPARTITIONED if partitions_def is None else getattr(partitions_def, "name", None) or str(partitions_def)


def project_graph(project: Project) -> Graph:
    return graph_of(dg.Definitions(assets=build_assets(project), resources=default_resources()))


def graph_of(defs: dg.Definitions) -> Graph:
    """Every asset with its inputs, partitions and code version, from the definitions' own
    asset specs, in dependency order (parents first)."""
    materializable = dg.AssetSelection.all().resolve(list(defs.assets or []))
    nodes = {spec.key: Node(spec.key, tuple(dep.asset_key for dep in spec.deps), spec.partitions_def, spec.code_version,
                            spec.key not in materializable) for spec in defs.resolve_all_asset_specs()}
    return {key: nodes[key] for key in _ordered(nodes)}


def _ordered(nodes: Graph) -> list[dg.AssetKey]:
    depth: dict[dg.AssetKey, int] = {}

    def depth_of(key: dg.AssetKey) -> int:
        if key not in depth:
            depth[key] = 1 + max((depth_of(p) for p in nodes[key].parents if p in nodes and p != key), default=-1)
        return depth[key]

    return sorted(nodes, key=lambda key: (depth_of(key), key.to_user_string()))


def fingerprint(project: Project) -> str:
    """What the definitions are built from: the settings and every source's partition key."""
    keys = {identity: sorted(project.source_keys(identity)) for identity in project.identities}
    text = json.dumps([project.model_dump(mode="json"), keys], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def assets_job(partitions: str = UNPARTITIONED, project_fingerprint: str = "") -> dg.JobDefinition:
    """The job of every materializable asset whose partitions definition is named `partitions`
    ("": the unpartitioned ones). The project is the one this process launched the run for;
    another process (a multiprocess step, a Celery worker) reads the file $SWAPLINE_PROJECT
    names, and refuses it if it is no longer the project the run was planned on."""
    project = _LAUNCHED.get(project_fingerprint) or load_project(project_path())
    if project_fingerprint and fingerprint(project) != project_fingerprint:
        raise RuntimeError(f"{project_path()} changed since this run was launched: run it again")
    defs = build_definitions(project, project_path())
    keys = [key for key, node in graph_of(defs).items() if node.partitions == partitions and not node.source]
    # No executor configured: in-process, as `swapline run` always ran (Ctrl-C reaches training,
    # which saves its checkpoint); Dagster's own default would start a process per step.
    job = dg.define_asset_job(f"swapline_{partitions or 'unpartitioned'}", selection=keys,
                              executor_def=None if defs.executor else dg.in_process_executor)
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name)


def reconstructable_job(project: Project, partitions: str):
    """assets_job as dg.execute_job takes it: a pointer any process can rebuild the job from."""
    key = fingerprint(project)
    _LAUNCHED[key] = project
    return dg.build_reconstructable_job(__name__, assets_job.__name__, (partitions, key))


def execute(project: Project, instance: dg.DagsterInstance, partitions: str, keys: list[dg.AssetKey],
            partition: str | None, tags: dict[str, str], log_level: str = "INFO") -> str:
    """One run of `keys` (of one partitions definition, for one partition key or none) through
    the instance; returns its run id. Failures are in the run's events, never raised."""
    result = dg.execute_job(reconstructable_job(project, partitions), instance=instance, asset_selection=keys,
                            tags={**tags, **({PARTITION_TAG: partition} if partition else {})},
                            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
    return result.run_id
