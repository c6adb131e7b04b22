"""Keeping the graph in step with the project file and the user's files: the partition sync
sensor, the source watch, the automation sensor and the collection schedules.

All three sensors run by default (with `dagster dev`, i.e. `./dev ui`, whose daemon ticks them):
the sync sensor adds a partition for a new source, the source watch records an observation when
a source's files changed, and the automation sensor requests what that makes out of date (each
asset's condition: assets/common.py `on_change`).
"""


import warnings
from pathlib import Path

import dagster as dg

from swapline.assets.collect import source_version
from swapline.assets.common import sources_partitions
from swapline.ops.ledger import is_batch, source_of
from swapline.project import ProjectError, load_project

# The tag Dagster reads an event's data version from (dagster._core.definitions.data_version).
DATA_VERSION_TAG = "dagster/data_version"


def wanted_partitions(project, identity: str, existing: set[str]) -> set[str]:
    """The partitions an identity should have: one per local source, and the batches its URL
    sources' listings registered (swapline/collection.py) for as long as the source is listed
    in the project file."""
    sources = project.source_keys(identity)
    urls = {key for key, src in sources.items() if src.url}
    return {key for key in sources if key not in urls} | {p for p in existing if is_batch(p) and source_of(p) in urls}


def partition_requests(project, instance: dg.DagsterInstance) -> list:
    """Add/delete requests that make each identity's source partitions match the project file."""
    requests = []
    for identity in project.identities:
        partitions = sources_partitions(identity)
        existing = set(instance.get_dynamic_partitions(partitions.name))
        wanted = wanted_partitions(project, identity, existing)
        if added := sorted(wanted - existing):
            requests.append(partitions.build_add_request(added))
        if removed := sorted(existing - wanted):
            requests.append(partitions.build_delete_request(removed))
    return requests


def sync_partitions(project, instance: dg.DagsterInstance) -> None:
    """Apply the same sync directly (the CLI runner, tests): the sensor's requests are applied by the daemon."""
    for identity in project.identities:
        partitions = sources_partitions(identity)
        existing = set(instance.get_dynamic_partitions(partitions.name))
        wanted = wanted_partitions(project, identity, existing)
        if added := sorted(wanted - existing):
            instance.add_dynamic_partitions(partitions.name, added)
        for key in sorted(existing - wanted):
            instance.delete_dynamic_partition(partitions.name, key)


def project_sync_sensor(project_file: Path) -> dg.SensorDefinition:
    # Its only runs rebuild facesets (the curate group) after a source was removed.
    @dg.sensor(name="project_partitions_sync", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               target=dg.AssetSelection.groups("curate"))
    def sync(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        """Re-reads the project file and adds/removes source partitions to match it."""
        try:
            project = load_project(project_file)
        except ProjectError as exc:
            return dg.SkipReason(f"project file has problems, partitions left as they are:\n{exc}")
        requests = partition_requests(project, context.instance)
        if not requests:
            return dg.SkipReason("partitions match the project file")
        # A removed source changes no data version, so nothing goes stale by itself: rebuild the
        # faceset of each identity that lost one (Dagster applies the deletions first).
        shrunk = sorted({r.partitions_def_name.removesuffix("_sources") for r in requests
                         if isinstance(r, dg.DeleteDynamicPartitionsRequest)})
        runs = [dg.RunRequest(asset_selection=[dg.AssetKey([identity, "faceset"])],
                              run_key=f"{identity}_faceset_after_removal_{context.cursor or 0}") for identity in shrunk]
        context.update_cursor(str(int(context.cursor or 0) + 1))
        return dg.SensorResult(dynamic_partitions_requests=requests, run_requests=runs)

    return sync


def source_observations(project, instance: dg.DagsterInstance) -> list[dg.AssetObservation]:
    """Observations of `<identity>/source_files` for the sources whose content changed since the
    last one recorded. What was seen last (a cheap fingerprint of names, sizes and times, and the
    content hash) is read back from the newest observation in the instance, so the sensor, the
    CLI's status/refresh and the in-process daemon share one memory and never disagree. Only
    sources whose partition exists are looked at: the sync adds it first."""
    events = []
    for identity in project.identities:
        key = dg.AssetKey([identity, "source_files"])
        existing = set(instance.get_dynamic_partitions(sources_partitions(identity).name))
        for partition, source in project.source_keys(identity).items():
            if partition not in existing or source.url:
                continue  # a URL source's batches are observed when it is listed (swapline/collection.py)
            known = last_seen(instance, key, partition)
            try:
                fingerprint, version = source_version(source, known)
            except OSError:
                continue  # gone or unreadable this minute: source_media reports it when it runs
            if known is None or known[1] != version or known[0] != fingerprint:
                before = {"previous_version": known[1]} if known else {}
                events.append(dg.AssetObservation(key, partition=partition, tags={DATA_VERSION_TAG: version},
                                                  metadata={"kind": source.kind, "location": source.location,
                                                            "fingerprint": fingerprint, **before}))
    return events


def last_seen(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> tuple[str, str] | None:
    """(fingerprint, data version) of a source's newest observation, None before the first."""
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    if not records:
        return None
    observation = records[0].asset_observation
    fingerprint = observation.metadata.get("fingerprint")
    return (fingerprint.value if fingerprint else "", observation.tags.get(DATA_VERSION_TAG, ""))


def observe_sources(project, instance: dg.DagsterInstance) -> list[dg.AssetObservation]:
    """Record what changed in the sources' files now (the CLI's look, without a daemon)."""
    events = source_observations(project, instance)
    for event in events:
        instance.report_runless_asset_event(event)
    return events


def source_watch_sensor(project_file: Path) -> dg.SensorDefinition:
    @dg.sensor(name="source_watch", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
    def watch(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        """Looks at every source's files each minute (names, sizes and times; the content is
        hashed only when those moved) and, when a source's content changed, records an
        observation of `<identity>/source_files` with the new content hash as its data version.
        The automation sensor then requests that source's partition downstream, and nothing else."""
        try:
            project = load_project(project_file)
        except ProjectError as exc:
            return dg.SkipReason(f"project file has problems, sources not looked at:\n{exc}")
        events = source_observations(project, context.instance)
        return dg.SensorResult(asset_events=events, skip_reason=None if events else "no source changed")

    return watch


def dead_runs_sensor() -> dg.SensorDefinition:
    @dg.sensor(name="dead_runs", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
    def dead_runs(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        """Finds runs whose process died without reporting (killed, crashed, the machine
        restarted), marks them failed with the reason and frees their pool slots, so a dead
        training never holds the GPU; the automation then resumes what they were building
        (swapline/liveness.py)."""
        from swapline.liveness import reap_dead_runs

        lines: list[str] = []
        reap_dead_runs(context.instance, echo=lines.append)
        for line in lines:
            context.log.warning(line)
        return dg.SkipReason("\n".join(lines) or "no dead runs")

    return dead_runs


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates every asset's automation condition each 30 s and launches what they request.
    In the code server (use_user_code_server), not the daemon: face_model's FacesetsNotBlocked
    is Python. Dagster then caps the sensor at 500 assets and checks (about 40 identities)."""
    with warnings.catch_warnings():  # use_user_code_server is beta in 1.13 and warned at every load
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.AutomationConditionSensorDefinition(
            "swapline_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=30, use_user_code_server=True,
            description="Requests the asset partitions whose inputs' data, or own settings, changed.",
        )


def collection_schedule(project, identity: str) -> dg.ScheduleDefinition:
    job = dg.define_asset_job(
        f"collect_{identity}",
        selection=dg.AssetSelection.assets(dg.AssetKey([identity, "source_media"])),
        partitions_def=sources_partitions(identity),
    )

    @dg.schedule(name=f"collect_{identity}_schedule", cron_schedule=project.collect_schedule, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING)
    def schedule(context: dg.ScheduleEvaluationContext):
        """Lists this identity's URL sources (channels, playlists and feeds expand: one request
        each, nothing downloaded) and registers what is new as a partition, then re-collects the
        local sources (changed photo folders), the new batches and single-video URLs (a cheap
        re-check); the automation carries what changed through extraction, the faceset, the
        model and the conversions. An unreachable listing is logged and changes nothing. Skipped
        once the identity's consent is withdrawn or expired."""
        from swapline.collection import collect_urls

        if why := project.identities[identity].consent.lapsed():
            return dg.SkipReason(f"{identity}: consent {why}; nothing is collected for this identity")
        # The artifact root as the storage resource reads it (no resource here: Dagster 1.13's test
        # schedule contexts leave a dangling instance behind when given resources).
        found = collect_urls(project, context.instance, Path(dg.EnvVar("SWAPLINE_HOME").get_value() or ".swapline"), [identity])
        for line in found.lines:
            context.log.info(line)
        existing = context.instance.get_dynamic_partitions(sources_partitions(identity).name)
        wanted = [key for key in existing if not is_batch(key)] + found.new_partitions[identity] + found.singles[identity]
        tick = context.scheduled_execution_time.isoformat()
        # One run per partition per tick: a retried tick does not launch the same collection twice.
        return [dg.RunRequest(run_key=f"{tick}:{key}", partition_key=key) for key in dict.fromkeys(wanted)]

    return schedule
