"""Pose binning, its words and image, and the model checks on loss curves."""

from __future__ import annotations

import math

import cv2
import dagster as dg
import numpy as np

from swapline.quality_checks.model_checks import evaluate_model
from swapline.quality_checks.pose import describe_bin, histogram_png, missing_bins, pose_histogram

YAW = [-60, -45, -30, -15, 0, 15, 30, 45, 60]
PITCH = [-30, -10, 10, 30]


def test_histogram_counts_and_missing_bins():
    yaw = [-50, -20, -5, 5, 5, 20, 70, math.nan]  # 70 is outside the edges, NaN is unknown
    pitch = [0, 0, 15, -15, 0, 0, 0, 0]
    counts = pose_histogram(yaw, pitch, YAW, PITCH)
    assert counts.shape == (8, 3) and counts.sum() == 6
    assert counts.sum(axis=1).tolist() == [1, 0, 1, 1, 2, 1, 0, 0]
    assert missing_bins(counts.sum(axis=1), YAW, 1) == [(-45.0, -30.0), (30.0, 45.0), (45.0, 60.0)]


def test_bins_in_words_follow_the_yaw_sign():
    # yaw > 0: the nose points to the image's right, the person looks to their own left.
    assert describe_bin("yaw", 30, 45) == "turned to their left (the image's right) (yaw 30..45°)"
    assert describe_bin("yaw", -45, -30).startswith("turned to their right")
    assert describe_bin("yaw", -15, 0).startswith("looking straight")
    assert describe_bin("pitch", 10, 30).startswith("looking up") and describe_bin("pitch", -30, -10).startswith("looking down")


def test_histogram_png_decodes_with_one_cell_per_bin():
    counts = pose_histogram([5, 20], [0, 0], YAW, PITCH)
    image = cv2.imdecode(np.frombuffer(histogram_png(counts, YAW, PITCH, cell=20), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (3 * 20 + 18, 8 * 20 + 18, 3)


def _model_checks(losses, tmp_path, preview=True):
    if preview:
        cv2.imwrite(str(tmp_path / "preview.png"), np.zeros((8, 8, 3), np.uint8))
    results = evaluate_model(dg.AssetKey(["s", "face_model"]), {"losses": losses}, tmp_path)
    return {r.check_name: r for r in results}


def test_model_checks_on_loss_curves(tmp_path):
    good = _model_checks([(i, 1.0 / i, 2.0 / i) for i in range(1, 9)], tmp_path)
    assert all(r.passed for r in good.values())
    (tmp_path / "no_preview").mkdir()
    one_side = _model_checks([(i, 1.0 / i, 0.5) for i in range(1, 9)], tmp_path / "no_preview", preview=False)
    assert one_side["losses_decreasing"].passed and not one_side["both_decoders_trained"].passed
    assert not one_side["preview_produced"].passed
    diverged = _model_checks([(1, 0.5, 0.5), (2, math.nan, 0.4)], tmp_path)
    assert not diverged["losses_finite"].passed and diverged["losses_finite"].severity == dg.AssetCheckSeverity.ERROR
    single = _model_checks([(5, 0.4, 0.4)], tmp_path)  # too few points to tell: warns, never blocks
    assert not single["losses_decreasing"].passed and single["losses_decreasing"].severity == dg.AssetCheckSeverity.WARN
