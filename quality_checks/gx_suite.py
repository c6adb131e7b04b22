"""Per-face constraints as a Great Expectations 1.x suite over the face table.

Each face must be sharp enough, big enough, neither too dark nor blown out, not turned
beyond what landmarks can follow, and have landmarks that lie around its detector box.
Each expectation allows a share of exceptions (`mostly`): a few odd faces do no harm; many
do. GX runs in an ephemeral context (nothing written to disk, no network) and is imported
only when a faceset is checked, so loading the code location stays fast.
"""

from __future__ import annotations

import logging
from typing import Any

from swapline.ops.candidates import landmarks_in_box
from swapline.project import Checks

logger = logging.getLogger(__name__)

CHECK_NAME = "per_face_expectations"
EXAMPLES = 5  # face ids shown per failing expectation


def constraints(checks: Checks) -> dict[str, dict[str, float]]:
    """Column -> bounds, from the project's thresholds."""
    low, high = checks.brightness_range
    return {
        "sharpness": {"min_value": checks.expected_sharpness},
        "face_size": {"min_value": checks.expected_face_size},
        "brightness": {"min_value": low, "max_value": high},
        "yaw": {"min_value": -checks.max_abs_yaw, "max_value": checks.max_abs_yaw},
        "landmarks_in_box": {"min_value": checks.min_landmarks_in_box},
    }


def build_suite(checks: Checks) -> Any:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="per_face")
    for column, bounds in constraints(checks).items():
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(column=column, mostly=checks.mostly, **bounds))
    return suite


def validate_faces(table: Any, checks: Checks) -> dict[str, Any]:
    """Run the suite on the face table -> {"success", "per_column": {column: {failing_share,
    examples, ...}}}. NaN values count as missing, which GX leaves out of the share."""
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame({
        "face_id": table["face_id"].astype(str).to_numpy(),
        **{c: table[c].astype(float).to_numpy() for c in ("sharpness", "face_size", "brightness", "yaw")},
        # Precomputed in a faceset's candidates (ops.candidates); from the landmarks otherwise.
        "landmarks_in_box": (table["landmarks_in_box"].astype(float).to_numpy() if "landmarks_in_box" in table
                             else landmarks_in_box(table["landmarks"], table["bbox"])),
    })
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # keep run logs free of tqdm bars
    batch = (context.data_sources.add_pandas("faces").add_dataframe_asset("face_table")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    # BASIC: GX counts and judges; COMPLETE also lists every failing row's index (2.5x slower
    # on 600 faces), of which only EXAMPLES ids are shown: those are picked here.
    result = batch.validate(build_suite(checks), result_format={"result_format": "BASIC"})
    per_column = {}
    for item in result.results:
        column, details = item.expectation_config.kwargs["column"], item.result
        failing = int(details.get("unexpected_count") or 0)
        per_column[column] = {
            "passed": bool(item.success),
            "failing_share": round(float(details.get("unexpected_percent") or 0.0) / 100, 4),
            "failing": failing,
            "examples": _examples(frame, column, constraints(checks)[column]) if failing else [],
        }
    return {"success": bool(result.success), "faces": len(frame), "per_column": per_column}


def _examples(frame: Any, column: str, bounds: dict[str, float]) -> list[str]:
    """The first EXAMPLES face ids outside `bounds` (inclusive, as the expectation; NaN is
    missing, not failing)."""
    values = frame[column]
    outside = (values < bounds.get("min_value", -float("inf"))) | (values > bounds.get("max_value", float("inf")))
    return frame.loc[outside, "face_id"].head(EXAMPLES).tolist()
