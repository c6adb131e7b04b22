"""Helpers shared by the stage modules: keys, versions, metadata."""


import base64
import time
from pathlib import Path
from typing import Any

import dagster as dg

from swapline.ops.storage import hash_json

# Bump a stage's algorithm version when its output would change for the same input.
ALGORITHM = {
    "source_media": "1",
    "target_video": "2",  # header only: the full decode moved to target_faces
    "target_faces": "2",  # mediapipe: tiles down to min_face, min score 0.6
    "frames": "1",
    "aligned_faces": "2",  # mediapipe: tiles down to min_face, min score 0.6
    "faceset": "1",
    "face_model": "1",
    "converted_video": "2",  # renders from target_faces' table, detects nothing
}


def code_version(stage: str, settings: Any = None) -> str:
    """Algorithm version plus a hash of the settings that shape the output: a changed setting
    makes exactly the assets that use it stale."""
    return f"{ALGORITHM[stage]}-{hash_json(settings)[:10]}"


def own_location(store: Any, context: dg.AssetExecutionContext) -> Path:
    """Where this asset (and partition) publishes: derived from its key, never spelled by hand.
    An asset reads other assets only through its declared inputs (resources/storage.py)."""
    return store.location(*context.asset_key.path, *([context.partition_key] if context.has_partition_key else []))


def sources_partitions(identity: str) -> dg.DynamicPartitionsDefinition:
    """One dynamic partition per source of `identity`, kept in sync with the project file."""
    return dg.DynamicPartitionsDefinition(name=f"{identity}_sources")


AC = dg.AutomationCondition


def on_change(*, start_missing: bool = True) -> dg.AutomationCondition:
    """When the automation sensor requests an asset partition: eager(), rebuilt so that it reacts
    to changed data versions, not to every materialization (eager()'s newly_updated fires on a
    re-run that produced the same bytes; dagster #25439), and to a changed setting.

    Triggers (each latched until the partition is requested or materialized, as in eager()):
    a partition that becomes missing (a new source), a dependency whose data version changed
    (new photos; a re-run with the same content changes nothing), or this asset's code version
    changing (a setting it depends on: every partition of it). The reset stays eager()'s
    `newly_updated`: a partition materialized by hand has been handled even if its version is
    unchanged. Unlike `eager().replace("newly_updated", data_version_changed())`, which would
    replace that reset too and request a faceset again after a re-run that changed nothing.

    `start_missing`: also request partitions missing when the sensor first sees this asset (a
    fresh instance, an identity or swap added with a reload); eager() leaves those alone.
    Off for assets fed by a dynamic-partitioned asset: with no partitions synced yet their
    dependencies look complete, and the faceset would be requested with no sources."""
    changed_deps = AC.any_deps_match(
        (AC.data_version_changed() & ~AC.executed_with_root_target()).with_label("data_version_changed_without_root")
        | AC.will_be_requested()
    ).with_label("any_deps_data_version_changed")
    trigger = (AC.newly_missing() | changed_deps | AC.code_version_changed()).since_last_handled()
    if start_missing:
        trigger = trigger | (AC.missing() & AC.initial_evaluation()).with_label("missing_at_start")
    trigger = trigger | (AC.execution_failed() & ResumeInterrupted()).with_label("interrupted")
    return (trigger & ~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()).with_label("on_change")


MAX_RESUMES = 3  # interrupted this many times in a row: left for a person (an out-of-memory loop, say)


class ResumeInterrupted(dg.AutomationCondition):
    """True for the asset partitions whose last run was found dead (killed, crashed, the machine
    restarted: swapline/liveness.py tags it `swapline/interrupted`), unless that happened
    MAX_RESUMES times in a row. With `execution_failed()` (the last run failed) it makes the
    automation resume an interrupted training or conversion by itself; an ordinary failure (a
    broken file) is not retried over and over."""

    @property
    def name(self) -> str:
        return "resume_interrupted"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        from swapline.liveness import interrupted_partitions

        if context.candidate_subset.is_empty:  # nothing failed: skip reading the recent runs (every tick)
            return dg.AutomationResult(context=context, true_subset=context.candidate_subset)
        streaks = interrupted_partitions(context.asset_graph_view.instance, context.key)
        wanted = {partition for partition, streak in streaks.items() if 0 < streak <= MAX_RESUMES}
        subset = context.get_empty_subset()
        if None in wanted:
            subset = context.candidate_subset
        elif wanted and context.candidate_subset.is_partitioned:
            subset = context.candidate_subset.compute_intersection_with_partition_keys(wanted)
        return dg.AutomationResult(context=context, true_subset=subset)


class FacesetsNotBlocked(dg.AutomationCondition):
    """True unless a faceset this model trains on failed a blocking check with ERROR on its latest
    materialization: the rule face_model itself applies before training, so a WARN (fewer faces
    than recommended, still trainable) does not hold training back, and a failure on one
    identity holds back only the swaps that use it. (Within one run Dagster itself skips a model
    after its faceset's ERROR; this holds it back in later runs, e.g. when the other identity
    changes.) Dagster's all_deps_blocking_checks_passed()
    counts every failed result whatever its severity, so every faceset under
    `checks.recommended_faces` would stop automated training. A Python condition: the automation
    sensor evaluates it in the code server (use_user_code_server)."""

    @property
    def name(self) -> str:
        return "facesets_not_blocked"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        from swapline.quality_checks.faceset_checks import failed_blocking_checks

        if context.candidate_subset.is_empty:  # nothing to hold back: skip reading the check results
            return dg.AutomationResult(context=context, true_subset=context.candidate_subset)
        instance = context.asset_graph_view.instance
        facesets = [key for key in context.asset_graph.get(context.key).parent_keys if key.path[-1] == "faceset"]
        blocked = any(failed_blocking_checks(instance, key.path[0]) for key in facesets)
        return dg.AutomationResult(context=context, true_subset=context.get_empty_subset() if blocked else context.candidate_subset)


class ConsentLive(dg.AutomationCondition):
    """True while every identity this asset trains or renders has live consent (not revoked, not
    expired): judged at each tick, so consent that expires overnight stops the next request. The
    run itself refuses too (ops.consent.require_live_consent); this keeps the automation from
    requesting runs that would only be refused."""

    def __init__(self, consents: dict):
        self.consents = dict(consents)  # identity -> ops.consent.Consent

    @property
    def name(self) -> str:
        return f"consent_live({', '.join(sorted(self.consents))})"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        from swapline.ops.consent import lapsed_identities

        lapsed = lapsed_identities(self.consents)
        return dg.AutomationResult(context=context, true_subset=context.get_empty_subset() if lapsed else context.candidate_subset)


def image_md(png_or_jpeg: bytes, alt: str, mime: str = "image/png") -> dg.MetadataValue:
    """A small preview image shown inline in the Dagster UI."""
    data = base64.b64encode(png_or_jpeg).decode()
    return dg.MetadataValue.md(f"![{alt}](data:{mime};base64,{data})")


class Eta:
    """Counts and ETA for progress lines in the Dagster log."""

    def __init__(self, total: int, log, label: str, every_s: float = 5.0):
        self.total, self.log, self.label, self.every_s = total, log, label, every_s
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        self.log.info(f"{self.label}: {done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)")
