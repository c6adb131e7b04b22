"""Keeping the graph in step with the project file: partition sync sensor and collection schedules."""


from pathlib import Path

import dagster as dg

from swapline.assets.common import sources_partitions
from swapline.project import ProjectError, load_project


def partition_requests(project, instance: dg.DagsterInstance) -> list:
    """Add/delete requests that make each identity's source partitions match the project file."""
    requests = []
    for identity in project.identities:
        partitions = sources_partitions(identity)
        wanted = set(project.source_keys(identity))
        existing = set(instance.get_dynamic_partitions(partitions.name))
        if added := sorted(wanted - existing):
            requests.append(partitions.build_add_request(added))
        if removed := sorted(existing - wanted):
            requests.append(partitions.build_delete_request(removed))
    return requests


def sync_partitions(project, instance: dg.DagsterInstance) -> None:
    """Apply the same sync directly (the CLI runner, tests): the sensor's requests are applied by the daemon."""
    for identity in project.identities:
        partitions = sources_partitions(identity)
        wanted = set(project.source_keys(identity))
        existing = set(instance.get_dynamic_partitions(partitions.name))
        if added := sorted(wanted - existing):
            instance.add_dynamic_partitions(partitions.name, added)
        for key in sorted(existing - wanted):
            instance.delete_dynamic_partition(partitions.name, key)


def project_sync_sensor(project_file: Path) -> dg.SensorDefinition:
    @dg.sensor(name="project_partitions_sync", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
    def sync(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        """Re-reads the project file and adds/removes source partitions to match it."""
        try:
            project = load_project(project_file)
        except ProjectError as exc:
            return dg.SkipReason(f"project file has problems, partitions left as they are:\n{exc}")
        requests = partition_requests(project, context.instance)
        if not requests:
            return dg.SkipReason("partitions match the project file")
        return dg.SensorResult(dynamic_partitions_requests=requests)

    return sync


def collection_schedule(project, identity: str) -> dg.ScheduleDefinition:
    job = dg.define_asset_job(
        f"collect_{identity}",
        selection=dg.AssetSelection.assets(dg.AssetKey([identity, "source_media"])),
        partitions_def=sources_partitions(identity),
    )

    @dg.schedule(name=f"collect_{identity}_schedule", cron_schedule=project.collect_schedule, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING)
    def schedule(context: dg.ScheduleEvaluationContext):
        """Re-collects every source of this identity (new URL uploads, changed photo folders)."""
        keys = context.instance.get_dynamic_partitions(sources_partitions(identity).name)
        tick = context.scheduled_execution_time.isoformat()
        # One run per source per tick: a retried tick does not launch the same collection twice.
        return [dg.RunRequest(run_key=f"{tick}:{key}", partition_key=key) for key in keys]

    return schedule
