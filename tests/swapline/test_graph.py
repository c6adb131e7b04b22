"""The asset graph is the program: a snapshot of it catches an edge that appears or disappears,
and no asset body reads another asset's artifact except through its declared inputs."""

from __future__ import annotations

import difflib
import json
import os
import re

from swapline.build import build_definitions
from swapline.project import load_project
from tests.conftest import REPO

SNAPSHOT = REPO / "tests" / "swapline" / "graph_snapshot.json"
UPDATE = "SWAPLINE_UPDATE_SNAPSHOT"


def graph_snapshot() -> dict:
    """Keys, deps, groups, partitions, code versions, pools and check names of the demo graph."""
    path = REPO / "demo" / "swapline.yaml"
    defs = build_definitions(load_project(path), path)
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[str]] = {}
    for check in graph.asset_check_keys:
        checks.setdefault(check.asset_key.to_user_string(), []).append(check.name)
    assets = {}
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        name = spec.key.to_user_string()
        partitions = spec.partitions_def
        assets[name] = {
            "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
            "group": spec.group_name,
            "partitions": getattr(partitions, "name", None) or (type(partitions).__name__ if partitions else None),
            "code_version": spec.code_version,
            "pool": graph.get(spec.key).pools and sorted(graph.get(spec.key).pools) or None,
            "checks": sorted(checks.get(name, [])),
        }
    return assets


def test_graph_matches_snapshot():
    now = json.dumps(graph_snapshot(), indent=1, sort_keys=True) + "\n"
    if os.environ.get(UPDATE):
        SNAPSHOT.write_text(now)
    before = SNAPSHOT.read_text()
    diff = "".join(difflib.unified_diff(before.splitlines(True), now.splitlines(True), "snapshot", "now"))
    assert not diff, f"The asset graph changed; if that is intended, re-run with {UPDATE}=1 and commit it:\n{diff}"


def test_conversion_reads_what_it_declares():
    graph = graph_snapshot()
    assert graph["anna_as_ben/converted_video"]["deps"] == [
        "anna/faceset", "anna_as_ben/target_faces", "anna_as_ben/target_video", "anna_ben/face_model"]
    # The target is also anna's source: its analysis reuses extraction's results as declared inputs.
    assert graph["anna_as_ben/target_faces"]["deps"] == ["anna/aligned_faces", "anna/frames", "anna_as_ben/target_video"]
    assert graph["anna_as_ben/target_faces"]["pool"] is None and graph["anna_as_ben/converted_video"]["pool"] == ["gpu"]


# Another asset's artifact reached by a pointer or a hand-spelled path: what declared inputs replace.
# Allowed: the cache folders, and own_location (an asset's own folder, derived from its key).
UNDECLARED = re.compile(r"\.current(_or_none)?\(|store\.location\((?!CACHE_DIR\b|\"_cache\"|\*context\.asset_key\.path)")


def test_no_asset_reads_around_its_inputs():
    offenders = []
    for folder in ("assets", "quality_checks"):
        for file in sorted((REPO / folder).glob("*.py")):
            for number, line in enumerate(file.read_text().splitlines(), 1):
                if UNDECLARED.search(line):
                    offenders.append(f"{file.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "read these through declared inputs (resources/storage.py artifact_input):\n" + "\n".join(offenders)
