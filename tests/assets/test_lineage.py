"""Nothing is deleted under a reader, tried with real processes: a faceset rebuilt while its
swap trains (new photos arriving during a long GPU run is the normal case) leaves the training
run reading, and evaluating on, the version it started with; and the earlier materialization
the UI shows still opens its files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from swapline.build import build_assets, default_resources
from swapline.ops.facetable import read_faces
from swapline.ops.workdir import POINTER
from swapline.project import load_project
from tests.swapline.test_recovery import budgeted_training, swapline, wait_for_new_checkpoint

pytestmark = pytest.mark.slow
FACESET = dg.AssetKey(["anna", "faceset"])


def faceset_materializations(instance) -> list[Path]:
    records = instance.fetch_materializations(FACESET, limit=10).records  # newest first
    return [Path(str(r.asset_materialization.metadata["artifact"].value)) for r in records]


def test_faceset_rebuilt_while_training_leaves_the_run_on_its_version(media_dir, tmp_path, monkeypatch, write_project):
    data, project, path, store = budgeted_training(media_dir, tmp_path, monkeypatch, write_project, 0.15)  # ~9 s a run
    log = tmp_path / "out.txt"
    subprocess.run(swapline("run", "--project", str(path)), check=True, timeout=900, stdout=log.open("w"))
    with dg.DagsterInstance.get() as instance:
        started_with = faceset_materializations(instance)[0]

    # The next run trains on; while it does, anna's faceset is rebuilt with stricter curation.
    proc = subprocess.Popen(swapline("run", "--project", str(path)), stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for_new_checkpoint(store.location("ab", "face_model", "_work") / POINTER, proc)
    # Stricter curation: the sharper half of anna's faces only (a different faceset for sure).
    sharpness = pd.read_parquet(started_with / "faceset.parquet", columns=["sharpness"])["sharpness"]
    data["curation"] = {"min_sharpness": float(sharpness.median())}
    path.write_text(yaml.safe_dump(data))
    stricter = load_project(path)
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize(build_assets(stricter), selection=[FACESET], instance=instance,
                              resources=default_resources()).success
        rebuilt = faceset_materializations(instance)[0]
    assert rebuilt != started_with and proc.poll() is None, "the faceset must change while the model trains"
    assert proc.wait(timeout=600) == 0, log.read_text()

    # The training run read, trained on and evaluated the version it started with.
    model = store.current(store.location("ab", "face_model")).manifest()
    assert model["trained_on"]["a"] == started_with.name.removeprefix("v-")
    assert model["evaluation"]["held_out"]["a"] >= 1
    # Both versions are kept: the UI's earlier materialization still opens its files.
    for folder in (started_with, rebuilt):
        assert len(read_faces(folder / "faceset.parquet", with_images=False)) and (folder / "manifest.json").is_file()
