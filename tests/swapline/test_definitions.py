"""The code location loads: the demo project's graph has the five groups and the right edges."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg

from swapline.build import build_definitions
from swapline.project import load_project
from tests.conftest import REPO


def test_demo_definitions_have_groups_and_lineage():
    path = REPO / "demo" / "swapline.yaml"
    defs = build_definitions(load_project(path), path)
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {"collect", "extract", "curate", "train", "convert"}
    parents = lambda *k: {p.to_user_string() for p in graph.get(dg.AssetKey(list(k))).parent_keys}  # noqa: E731
    assert parents("anna", "faceset") == {"anna/aligned_faces"}
    assert parents("anna_ben", "face_model") == {"anna/faceset", "ben/faceset"}
    assert parents("anna_as_ben", "converted_video") == {"anna_ben/face_model", "anna_as_ben/target_video",
                                                        "anna_as_ben/target_faces", "anna/faceset"}
    assert parents("anna", "source_media") == {"anna/source_files"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        # UI description and real staleness (source_files is observed: its versions are the files')
        assert node.description and (node.code_version or node.is_observable), key
    assert {s.name for s in defs.sensors} == {"project_partitions_sync", "source_watch", "dead_runs", "swapline_automation"}
    assert {s.name for s in defs.schedules} == {"collect_anna_schedule", "collect_ben_schedule"}


def test_code_location_loads_through_dagster_cli(tmp_path):
    env = {"SWAPLINE_PROJECT": str(REPO / "demo" / "swapline.yaml"), "SWAPLINE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
                          cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
