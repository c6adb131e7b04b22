"""Checks on an identity's faceset: is there enough data, and of the right kind, to train on?

One faceset asset per identity, so these results never leak between people. Only
`enough_faces` blocks (ERROR below `checks.min_faces`): training on a couple of dozen
faces wastes hours for nothing. Everything else WARNs: the model can still train, the
user learns what to add. Thresholds come from the project's `checks:` block and are
repeated, with the measured values, in each result's metadata.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from swapline.project import Checks
from swapline.quality_checks import gx_suite
from swapline.quality_checks.pose import describe_bin, histogram_png, missing_bins, pose_histogram

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def _descriptions(c: Checks) -> dict[str, str]:
    return {
        "enough_faces": (
            f"Fails (ERROR, blocks training) below {c.min_faces} distinct faces after dedup and quality filtering; "
            f"warns below {c.recommended_faces} (300-2,000 train well). What to do: add videos or photos of this "
            "person with varied poses, expressions and lighting."),
        "pose_coverage": (
            "Histogram of head yaw/pitch over the faceset; warns naming each pose bin with fewer than "
            f"{c.min_faces_per_bin} faces. The model only learns the angles it sees: cover the poses of the video "
            "you will convert. What to do: add footage where the person looks the missing way, e.g. "
            "'add videos where she looks to her left'."),
        "blur_share": (
            f"Warns when more than {c.max_blur_share:.0%} of the extracted faces were too blurry to keep. What to do: "
            "use sharper, higher-resolution sources (less motion blur, better light)."),
        "duplicate_share": (
            f"Warns when more than {c.max_duplicate_share:.0%} of the extracted faces were near-duplicates of another "
            "(a static shot gives the same face over and over). What to do: add footage with more movement and "
            "expressions, or lower extraction.sample_fps."),
        "source_diversity": (
            f"Warns when one source supplies more than {c.max_source_share:.0%} of the faces: one video series making "
            "up most of a person's faces gives a poor swap. What to do: add other videos (other days, rooms, light)."),
        "one_person": (
            "Warns when a sample of the faceset's face embeddings shows more than one person (over 10% of faces far "
            "from the majority). What to do: without reference_photos, add them for this identity so only this person "
            "is kept, or remove sources that show someone else; with reference_photos set, lower "
            "extraction.identity_distance or remove the reference photos that look like someone else (the metadata "
            "names the outlier faces)."),
        gx_suite.CHECK_NAME: (
            "Great Expectations suite over the per-face table: sharpness, face size, brightness (dark images are "
            f"useless), |yaw| and landmark sanity, each needing {c.mostly:.0%} of faces to pass. Metadata lists the "
            "failing share and example face ids. What to do: look at the examples; replace dark, tiny or blurry "
            "sources, or add reference_photos if landmarks land on the wrong face."),
    }


def faceset_check_specs(key: dg.AssetKey, checks: Checks) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name=name, asset=key, description=text, blocking=name in BLOCKING)
            for name, text in _descriptions(checks).items()]


BLOCKING = frozenset({"enough_faces"})  # the checks whose ERROR stops a swap's training


def _result(key: dg.AssetKey, name: str, passed: bool, metadata: dict, severity=WARN) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, asset_key=key, passed=bool(passed), severity=severity, metadata=metadata)


def enough_faces(key: dg.AssetKey, kept: int, sources: int, c: Checks) -> dg.AssetCheckResult:
    severity = ERROR if kept < c.min_faces else WARN
    return _result(key, "enough_faces", kept >= c.recommended_faces,
                   {"faces": kept, "min_faces": c.min_faces, "recommended": c.recommended_faces, "sources": sources},
                   severity)


def pose_coverage(key: dg.AssetKey, table: Any, c: Checks) -> dg.AssetCheckResult:
    counts = pose_histogram(table["yaw"], table["pitch"], c.yaw_bins, c.pitch_bins)  # (yaw bins, pitch bins)
    missing = ([describe_bin("yaw", lo, hi) for lo, hi in missing_bins(counts.sum(axis=1), c.yaw_bins, c.min_faces_per_bin)]
               + [describe_bin("pitch", lo, hi) for lo, hi in missing_bins(counts.sum(axis=0), c.pitch_bins, c.min_faces_per_bin)])
    from swapline.assets.common import image_md

    metadata = {
        "missing": dg.MetadataValue.md("\n".join(f"- no or few faces {m}" for m in missing) or "none"),
        "missing_bins": dg.MetadataValue.json(missing),
        "yaw_counts": dg.MetadataValue.json(dict(zip(_labels(c.yaw_bins), counts.sum(axis=1).tolist()))),
        "pitch_counts": dg.MetadataValue.json(dict(zip(_labels(c.pitch_bins), counts.sum(axis=0).tolist()))),
        "min_faces_per_bin": c.min_faces_per_bin,
        "histogram": image_md(histogram_png(counts, c.yaw_bins, c.pitch_bins), "yaw (columns) x pitch (rows)"),
    }
    return _result(key, "pose_coverage", not missing, metadata)


def _labels(edges: list[float]) -> list[str]:
    return [f"{a:g}..{b:g}" for a, b in zip(edges, edges[1:])]


def share_checks(key: dg.AssetKey, stats: dict, c: Checks) -> list[dg.AssetCheckResult]:
    raw = max(stats["raw"], 1)
    blur, dup = stats["dropped_blurry"] / raw, stats["dropped_duplicate"] / raw
    return [
        _result(key, "blur_share", blur <= c.max_blur_share,
                {"blur_share": round(blur, 4), "blurry": stats["dropped_blurry"], "raw": stats["raw"], "max": c.max_blur_share}),
        _result(key, "duplicate_share", dup <= c.max_duplicate_share,
                {"duplicate_share": round(dup, 4), "duplicates": stats["dropped_duplicate"], "raw": stats["raw"],
                 "max": c.max_duplicate_share}),
    ]


def source_diversity(key: dg.AssetKey, table: Any, c: Checks) -> dg.AssetCheckResult:
    counts = table["source"].value_counts()
    share = float(counts.iloc[0] / counts.sum()) if len(counts) else 0.0
    top = str(counts.index[0]) if len(counts) else ""
    return _result(key, "source_diversity", len(counts) > 0 and share <= c.max_source_share,
                   {"largest_source": top, "largest_share": round(share, 4), "max_source_share": c.max_source_share,
                    "faces_per_source": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()})})


def one_person_advice(outliers: list[str], references: bool) -> str:
    """What to do about faces of someone else in a faceset: reference photos when there are
    none; when there are, they let these faces through, so the threshold or a photo is wrong."""
    if not references:
        return "add reference_photos to keep only this person"
    return ("reference_photos are set and still let these faces through: lower extraction.identity_distance, or remove "
            f"the reference photos that look like someone else (outlier faces: {', '.join(outliers[:5]) or 'none sampled'})")


def one_person(key: dg.AssetKey, purity: dict, references: bool = False) -> dg.AssetCheckResult:
    metadata = {"sampled": purity["sampled"], "outlier_share": purity["outlier_share"],
                "outlier_face_ids": dg.MetadataValue.json(purity["outliers"]), "reference_photos": references}
    if purity["several_people"]:
        metadata["advice"] = one_person_advice(purity["outliers"], references)
    return _result(key, "one_person", not purity["several_people"], metadata)


def per_face(key: dg.AssetKey, table: Any, c: Checks, outcome: dict | None = None) -> dg.AssetCheckResult:
    if len(table) == 0:
        return _result(key, gx_suite.CHECK_NAME, False, {"faces": 0, "note": "no faces to check"})
    outcome = outcome or gx_suite.validate_faces(table, c)
    metadata: dict[str, Any] = {"faces": outcome["faces"], "mostly": c.mostly,
                                "thresholds": dg.MetadataValue.json(gx_suite.constraints(c))}
    for column, r in outcome["per_column"].items():
        metadata[f"{column}_failing_share"] = r["failing_share"]
        metadata[f"{column}_examples"] = dg.MetadataValue.json(r["examples"])
    metadata["failing_expectations"] = dg.MetadataValue.json([col for col, r in outcome["per_column"].items() if not r["passed"]])
    return _result(key, gx_suite.CHECK_NAME, outcome["success"], metadata)


def evaluate_faceset(key: dg.AssetKey, table: Any, stats: dict, sources: int, purity: dict,
                     checks: Checks, per_face_outcome: dict | None = None, references: bool = False) -> list[dg.AssetCheckResult]:
    """Every spec of `faceset_check_specs`, evaluated on the kept faces (`table`) and the
    build's counts (`stats` from ops.faceset.build_faceset). `per_face_outcome`: the GX suite's
    result on `table` (gx_suite.validate_faces), when the caller ran it already; `references`:
    whether the identity has reference photos (the one_person advice differs)."""
    return [enough_faces(key, stats["kept"], sources, checks), pose_coverage(key, table, checks),
            *share_checks(key, stats, checks), source_diversity(key, table, checks), one_person(key, purity, references),
            per_face(key, table, checks, per_face_outcome)]


def failed_blocking_checks(instance: dg.DagsterInstance, identity: str) -> list[str]:
    """Names of the blocking checks that failed with ERROR on the latest materialization of
    `identity`'s faceset. Evaluations of older materializations do not count: a faceset
    rebuilt with more faces is judged afresh (the checks run in the same step, so the
    evaluation of the current faceset carries its run id)."""
    key = dg.AssetKey([identity, "faceset"])
    latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    if not latest:
        return []
    failed = []
    for name in sorted(BLOCKING):
        evaluation = latest_evaluation(instance, dg.AssetCheckKey(key, name), run_id=latest[0].run_id)
        if evaluation is not None and not evaluation.passed and evaluation.severity == ERROR:
            failed.append(name)
    return failed


def latest_evaluation(instance: dg.DagsterInstance, check: dg.AssetCheckKey, run_id: str | None = None) -> Any:
    """The newest completed evaluation of `check` (optionally only from `run_id`), or None.
    Records of checks only planned (a run that failed before reaching them) are skipped."""
    for record in instance.event_log_storage.get_asset_check_execution_history(check, limit=5):
        data = record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
        if getattr(data, "passed", None) is None or (run_id and record.run_id != run_id):
            continue
        return data
    return None
