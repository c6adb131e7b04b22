"""Checks on a swap's face model: did training actually work?

Evaluated from the model's manifest (the loss curve of the run that produced it) and its
folder, so a materialization that found nothing to do still reports on the model it keeps.
Only non-finite losses are an ERROR (a NaN model converts into garbage); the rest WARN.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dagster as dg

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR
PART = 0.25  # compare the mean loss of the first and the last quarter of the run's curve

DESCRIPTIONS = {
    "losses_finite": ("Fails (ERROR) when any logged loss is NaN or infinite: the model diverged and would convert "
                      "garbage. What to do: retrain from scratch (delete the model) with a smaller batch or check the faces."),
    "losses_decreasing": ("Warns when the combined loss of the last quarter of this run is not below that of the first "
                          "quarter (or the run logged too few points to tell). What to do: train longer (iterations), "
                          "or check that both facesets pass their checks."),
    "both_decoders_trained": ("Warns unless both identities' losses went down during the run: a decoder that did not "
                              "learn renders a blur. What to do: check the faceset of the side that did not improve."),
    "preview_produced": ("Warns when the model has no readable preview image (A, A→A, A→B / B, B→B, B→A). What to do: "
                         "re-materialize the model; look at the preview before converting."),
}


def model_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name=name, asset=key, description=text) for name, text in DESCRIPTIONS.items()]


def loss_trend(losses: list[Any]) -> dict[str, Any]:
    """First vs last part means of each side's loss; `enough` is False below 2 logged points."""
    rows = [(float(a), float(b)) for _, a, b in losses]
    n = max(1, int(round(len(rows) * PART)))
    first, last = rows[:n], rows[-n:]
    mean = lambda part, i: sum(r[i] for r in part) / len(part) if part else math.nan  # noqa: E731
    trend = {"points": len(rows), "first_a": mean(first, 0), "last_a": mean(last, 0),
             "first_b": mean(first, 1), "last_b": mean(last, 1)}
    trend["enough"] = len(rows) >= 2
    return trend


def _result(key, name, passed, metadata, severity=WARN) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, asset_key=key, passed=bool(passed), severity=severity, metadata=metadata)


def evaluate_model(key: dg.AssetKey, manifest: dict, folder: Path) -> list[dg.AssetCheckResult]:
    losses = manifest.get("losses") or []
    finite = bool(losses) and all(math.isfinite(float(v)) for _, a, b in losses for v in (a, b))
    t = loss_trend(losses) if losses else {"points": 0, "enough": False}
    numbers = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in t.items()
               if k != "enough"}
    numbers = {k: v for k, v in numbers.items() if not (isinstance(v, float) and not math.isfinite(v))}
    ok = finite and t["enough"]
    side_ok = {s: ok and t[f"last_{s}"] < t[f"first_{s}"] for s in ("a", "b")}
    both = ok and t["last_a"] + t["last_b"] < t["first_a"] + t["first_b"]
    return [
        _result(key, "losses_finite", finite, {"points": len(losses)}, ERROR),
        _result(key, "losses_decreasing", both, {**numbers, "compared_share": PART}),
        _result(key, "both_decoders_trained", all(side_ok.values()),
                {**numbers, "a_improved": side_ok["a"], "b_improved": side_ok["b"]}),
        _result(key, "preview_produced", _readable_png(folder / "preview.png"), {"preview": str(folder / "preview.png")}),
    ]


def _readable_png(path: Path) -> bool:
    if not path.is_file():
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
            return image.size[0] > 0 and image.size[1] > 0
    except Exception:  # any decode failure means no usable preview
        return False
