"""Does the rendered identity's faceset cover the target video's poses and lighting?

A model draws only what it was shown: never a profile if its faces were all frontal, never a
dim face if they were all well lit. These checks compare the faces of every frame of a
conversion's target video (the `target_faces` table) with the faceset of the identity whose
face is rendered onto it.

Why an `@dg.multi_asset_check` on `<conversion>/target_faces` (with the faceset as an
input), not checks on `converted_video`: the target and the faceset are both
ready before the swap trains, and the fix (more footage of the rendered person) means
retraining. Attached to converted_video the warning would come after hours on the GPU; here it
comes when the target is collected. Both checks are WARN: a gap makes the swap worse, it does
not make it wrong, so they never block.

Pose bins are the project's `checks:` bins, shared with the faceset checks (quality_checks/pose.py),
each axis on its own (2-D bins would be too sparse for a few hundred faces). Poses outside
the range count in the outermost bin. Signs follow `swapline.ops.faces.head_pose`: yaw > 0
when the subject turns to their own left (nose toward the image's right), pitch > 0 looking up.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import dagster as dg
import numpy as np

from swapline.ops.storage import Published
from swapline.project import Checks, Project
from swapline.quality_checks.pose import axis_counts, describe_bin
from swapline.resources.storage import artifact_input

# head_pose is good to ~10 degrees: a faceset face this close outside a bin still counts for it,
# so a target at pitch 14 is not reported against a faceset at pitch 16.
TOLERANCE_DEG = 5.0
MIN_TARGET_SHARE = 0.05  # a bin the target needs: at least this share of its faces ...
MIN_TARGET_FACES = 2  # ... and at least this many (one odd detection is not a need)
MIN_FACESET_FACES = 5  # a couple of faces do not teach a model a pose
LOW_PCT, HIGH_PCT = 5, 95  # the faceset's brightness range, robust to a few outliers
# Conversion colour-matches each face (mean/std in Lab), which absorbs a moderate exposure
# difference; what it cannot give back is detail the model never learned in shadow or glare.
# So a target face counts as outside only this many luma levels (0..255) beyond the range:
# a faceset spanning 134..140 would otherwise flag a target at 131.
BRIGHTNESS_MARGIN = 20.0
MAX_OUTSIDE_SHARE = 0.2  # target faces outside that range that make it "darker/brighter"

POSE_DESCRIPTION = (
    "Warns when the target video shows head poses (yaw or pitch, 15-degree bins) that the rendered "
    "identity's faceset lacks: the model was never shown such faces and cannot draw them well. "
    "What to do: add videos or photos of that person looking the way the metadata says (e.g. to "
    "their left, or up), re-materialize their faceset and retrain the swap."
)
LIGHT_DESCRIPTION = (
    f"Warns when over {MAX_OUTSIDE_SHARE:.0%} of the target video's faces are darker than the "
    f"rendered identity's faceset's {LOW_PCT}th brightness percentile, or brighter than its "
    f"{HIGH_PCT}th, by more than {BRIGHTNESS_MARGIN:.0f} luma levels (colour matching absorbs less): "
    "the model never saw that person in such light. What to do: add footage of "
    "that person in similar lighting (dim or bright), or convert a better lit target."
)


def missing_pose_bins(faceset: Any, target: Any, checks: Checks) -> list[dict[str, Any]]:
    """Bins with enough of the target's faces and too few of the faceset's (within tolerance)."""
    needed_min = max(MIN_TARGET_FACES, MIN_TARGET_SHARE * len(target))
    missing = []
    for axis, edges in (("yaw", checks.yaw_bins), ("pitch", checks.pitch_bins)):
        have = axis_counts(faceset[axis].to_numpy(), edges, TOLERANCE_DEG)
        need = axis_counts(target[axis].to_numpy(), edges)
        for (lo, hi), n_need, n_have in zip(pairwise(edges), need, have):
            if n_need >= needed_min and n_have < MIN_FACESET_FACES:
                missing.append({"axis": axis, "bin": [lo, hi], "target_faces": int(n_need),
                                "faceset_faces": int(n_have), "pose": describe_bin(axis, lo, hi)})
    return missing


def pose_result(key: dg.AssetKey, faceset: Any, target: Any, who: str, checks: Checks) -> dg.AssetCheckResult:
    missing = missing_pose_bins(faceset, target, checks)
    advice = [f"the target is {m['pose']} in {m['target_faces']} sampled faces, but {who}'s faceset has "
              f"{m['faceset_faces']} such faces: add videos of {who} {m['pose'].split(' (')[0]}" for m in missing]
    yaw, pitch = checks.yaw_bins, checks.pitch_bins
    metadata = {
        "missing_bins": dg.MetadataValue.json(missing),
        "advice": dg.MetadataValue.md("\n".join(f"- {a}" for a in advice) or "every pose of the target is covered"),
        "target_faces": len(target), "faceset_faces": len(faceset),
        "yaw_bins": dg.MetadataValue.json({"edges": list(yaw), "target": axis_counts(target["yaw"], yaw).tolist(),
                                           "faceset": axis_counts(faceset["yaw"], yaw).tolist()}),
        "pitch_bins": dg.MetadataValue.json({"edges": list(pitch), "target": axis_counts(target["pitch"], pitch).tolist(),
                                             "faceset": axis_counts(faceset["pitch"], pitch).tolist()}),
        "tolerance_deg": TOLERANCE_DEG, "min_faceset_faces": MIN_FACESET_FACES, "min_target_share": MIN_TARGET_SHARE,
    }
    return dg.AssetCheckResult(check_name="pose_coverage", asset_key=key, passed=not missing,
                               severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
                               description="; ".join(advice) or None)


def lighting_result(key: dg.AssetKey, faceset: Any, target: Any, who: str) -> dg.AssetCheckResult:
    low, high = (float(np.nanpercentile(faceset["brightness"], p)) for p in (LOW_PCT, HIGH_PCT))
    light = target["brightness"].to_numpy(dtype=float)
    darker = float((light < low - BRIGHTNESS_MARGIN).mean())
    brighter = float((light > high + BRIGHTNESS_MARGIN).mean())
    problems = []
    if darker > MAX_OUTSIDE_SHARE:
        problems.append(f"the target is darker than anything in {who}'s faceset ({darker:.0%} of its faces below "
                        f"brightness {low - BRIGHTNESS_MARGIN:.0f}): add footage of {who} in dim light")
    if brighter > MAX_OUTSIDE_SHARE:
        problems.append(f"the target is brighter than anything in {who}'s faceset ({brighter:.0%} of its faces above "
                        f"brightness {high + BRIGHTNESS_MARGIN:.0f}): add footage of {who} in bright light")
    metadata = {
        f"faceset_p{LOW_PCT}": round(low, 1), f"faceset_p{HIGH_PCT}": round(high, 1),
        "target_median": round(float(np.median(light)), 1), "target_darker_share": round(darker, 3),
        "target_brighter_share": round(brighter, 3), "max_outside_share": MAX_OUTSIDE_SHARE,
        "margin": BRIGHTNESS_MARGIN,
        "target_faces": len(target), "faceset_faces": len(faceset),
    }
    return dg.AssetCheckResult(check_name="lighting_coverage", asset_key=key, passed=not problems,
                               severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
                               description="; ".join(problems) or None)


def evaluate_coverage(key: dg.AssetKey, faceset: Any, target: Any, who: str,
                      checks: Checks | None = None) -> list[dg.AssetCheckResult]:
    """Both checks; a target without faces has nothing to cover (the conversion swaps none)."""
    if len(target) == 0 or len(faceset) == 0:
        why = "the target video has no detected faces" if len(target) == 0 else f"{who}'s faceset is empty"
        return [dg.AssetCheckResult(check_name=name, asset_key=key, passed=len(target) == 0,
                                    severity=dg.AssetCheckSeverity.WARN, metadata={"note": why})
                for name in ("pose_coverage", "lighting_coverage")]
    return [pose_result(key, faceset, target, who, checks or Checks()), lighting_result(key, faceset, target, who)]


def target_coverage_checks(project: Project, name: str) -> dg.AssetChecksDefinition:
    """The two coverage checks of one conversion's target against its rendered identity."""
    conversion = project.conversions[name]
    _, rendered = conversion.sides(project.swaps[conversion.swap])
    key, faceset_key = dg.AssetKey([name, "target_faces"]), dg.AssetKey([rendered, "faceset"])
    specs = [dg.AssetCheckSpec(check, asset=key, additional_deps=[faceset_key], description=text)
             for check, text in (("pose_coverage", POSE_DESCRIPTION), ("lighting_coverage", LIGHT_DESCRIPTION))]

    @dg.multi_asset_check(specs=specs, name=f"{name}_target_coverage",
                          ins={"target_faces": artifact_input(key), "faceset": artifact_input(faceset_key)})
    def target_coverage(target_faces: Published, faceset: Published) -> Iterator[dg.AssetCheckResult]:
        from swapline.ops.facetable import read_faces
        from swapline.ops.target import TABLE, largest_faces, read_table

        table = read_faces(faceset.path / "faceset.parquet", with_images=False)
        # Every frame's largest face: the one a conversion without references swaps, and in a
        # one-person video the person shown.
        yield from evaluate_coverage(key, table, largest_faces(read_table(target_faces.path / TABLE)), rendered, project.checks)

    return target_coverage
